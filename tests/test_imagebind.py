"""cmsf.models.imagebind against Meta's own ImageBind code (the `imagebind-unofficial` package, a copy of
facebookresearch/ImageBind) used as an oracle: same state dict, same inputs, same embeddings.

Meta's `imagebind/__init__.py` imports its `data` module, which needs pytorchvideo (broken with
current torchvision); an empty module is registered under that name to import the models only.
The oracles for the input preparation (which live in that data module) are written out here from
Meta's description: torchvision transforms for images, `torchaudio.compliance.kaldi.fbank` and
pytorchvideo's clip placement for audio.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from fractions import Fraction

import pytest
import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF
from PIL import Image
from torchvision import transforms

from cmsf.models.imagebind import (
    ImageBind,
    audio_clip_bounds,
    checkpoint_candidates,
    find_checkpoint,
    imagebind_audio_inputs,
    imagebind_vision_inputs,
    load_imagebind,
)

SIZES = dict(
    vision_embed_dim=48,
    vision_num_blocks=2,
    vision_num_heads=4,
    audio_embed_dim=32,
    audio_num_blocks=2,
    audio_num_heads=2,
    text_embed_dim=32,
    text_num_blocks=1,
    text_num_heads=2,
    out_embed_dim=24,
)
# Meta's model always builds all six modalities: keep the other three tiny too.
OTHER_SIZES = dict(
    depth_embed_dim=32, depth_num_blocks=1, depth_num_heads=2,
    thermal_embed_dim=32, thermal_num_blocks=1, thermal_num_heads=2,
    imu_embed_dim=32, imu_num_blocks=1, imu_num_heads=2,
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# The oracle
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def meta():
    """Meta's `imagebind.models.imagebind_model` module."""
    if importlib.util.find_spec("imagebind") is None:
        pytest.skip("oracle not installed: pip install --no-deps imagebind-unofficial==0.1.1")
    with pytest.MonkeyPatch.context() as mp:
        if "imagebind.data" not in sys.modules:
            mp.setitem(sys.modules, "imagebind.data", types.ModuleType("imagebind.data"))
        from imagebind.models import imagebind_model
    return imagebind_model


@pytest.fixture(scope="module")
def meta_model(meta):
    """Meta's ImageBindModel, small, with every vision/audio tensor random (nothing 0 or 1)."""
    torch.manual_seed(0)
    model = meta.ImageBindModel(**SIZES, **OTHER_SIZES).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and name.endswith("weight"):  # LayerNorm scales
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif p.ndim == 2:  # Linear weights, in_proj_weight
                p.copy_(torch.randn_like(p) * p.shape[1] ** -0.5)
            else:  # biases, cls tokens, pos embeds, bias_k/v, conv kernels
                p.copy_(0.5 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def checkpoint(meta_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("imagebind") / "small.pth"
    torch.save(meta_model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_imagebind(checkpoint, device="cpu", **SIZES)


def meta_forward(meta_model, modality, x):
    with torch.no_grad():
        return meta_model({modality: x})[modality]


# --------------------------------------------------------------------------------------------
# Model: equal to Meta's
# --------------------------------------------------------------------------------------------


def test_vision_embeddings_equal_meta(model, meta_model):
    torch.manual_seed(1)
    pixels = torch.randn(5, 3, 224, 224)
    ours = model.embed_vision(pixels)
    assert ours.shape == (5, SIZES["out_embed_dim"]) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, meta_forward(meta_model, "vision", pixels), atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(5))


def test_audio_embeddings_equal_meta_with_several_clips(model, meta_model):
    torch.manual_seed(2)
    features = torch.randn(4, 3, 1, 128, 204)
    ours = model.embed_audio(features)
    expected = meta_forward(meta_model, "audio", features)
    assert ours.shape == (4, SIZES["out_embed_dim"]) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)
    # averaged after the ×20 scaling: distinct clips give a norm below 20
    assert bool((ours.norm(dim=-1) < 20 - 1e-3).all())


def test_single_clip_audio_embedding_has_norm_20(model, meta_model):
    torch.manual_seed(3)
    features = torch.randn(2, 1, 1, 128, 204)
    ours = model.embed_audio(features)
    torch.testing.assert_close(ours, meta_forward(meta_model, "audio", features), atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.norm(dim=-1), torch.full((2,), 20.0))


def test_tiny_activations_where_layer_norm_eps_matters(meta, meta_model):
    """Inputs and embeddings scaled down until activations are comparable to the LayerNorm
    epsilons (1e-6 in the trunks and heads, 1e-5 in the audio stem): a wrong epsilon shows."""
    state = dict(meta_model.state_dict())
    for key in list(state):
        quiet = ("cls_token", "pos_embed", "rgbt_stem.norm_layer", "pre_transformer_layer")
        if key.split(".")[1] in ("vision", "audio") and any(q in key for q in quiet):
            state[key] = state[key] * 1e-3
    quiet_meta = meta.ImageBindModel(**SIZES, **OTHER_SIZES).eval()
    quiet_meta.load_state_dict(state)
    quiet_model = load_imagebind(state, device="cpu", **SIZES)
    torch.manual_seed(6)
    pixels = 1e-3 * torch.randn(2, 3, 224, 224)
    features = 1e-3 * torch.randn(2, 3, 1, 128, 204)
    for modality, x, ours in [("vision", pixels, quiet_model.embed_vision), ("audio", features, quiet_model.embed_audio)]:
        torch.testing.assert_close(ours(x), meta_forward(quiet_meta, modality, x), atol=1e-4, rtol=0)


def test_logit_scale_comes_from_the_checkpoint(meta_model):
    state = dict(meta_model.state_dict())
    assert math.isclose(float(state["modality_postprocessors.audio.1.log_logit_scale"].exp()), 20.0, rel_tol=1e-6)
    state["modality_postprocessors.audio.1.log_logit_scale"] = torch.tensor(math.log(7.0))
    out = load_imagebind(state, device="cpu", **SIZES).embed_audio(torch.randn(2, 1, 1, 128, 204))
    torch.testing.assert_close(out.norm(dim=-1), torch.full((2,), 7.0))


def test_batch_equals_item_by_item(model):
    torch.manual_seed(4)
    pixels = torch.randn(3, 3, 224, 224)
    features = torch.randn(3, 3, 1, 128, 204)
    items_v = torch.cat([model.embed_vision(pixels[i : i + 1]) for i in range(3)])
    items_a = torch.cat([model.embed_audio(features[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(model.embed_vision(pixels), items_v, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.embed_audio(features), items_a, atol=1e-5, rtol=0)


def test_bfloat16_agrees_with_float32(checkpoint, model):
    bf16 = load_imagebind(checkpoint, device="cpu", dtype=torch.bfloat16, **SIZES)
    assert bf16.dtype == torch.bfloat16
    torch.manual_seed(5)
    pixels = torch.randn(3, 3, 224, 224)
    features = torch.randn(2, 3, 1, 128, 204)
    out_v, out_a = bf16.embed_vision(pixels), bf16.embed_audio(features)
    assert out_v.dtype == out_a.dtype == torch.float32
    assert bool((torch.cosine_similarity(out_v, model.embed_vision(pixels)) > 0.99).all())
    assert bool((torch.cosine_similarity(out_a, model.embed_audio(features)) > 0.99).all())
    assert not torch.equal(out_v, model.embed_vision(pixels))  # it really ran in bfloat16


def test_loaded_model_is_frozen_eval_float32_on_requested_device(model):
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_embed_inputs_are_checked(model):
    for bad in [torch.randn(2, 3, 200, 200), torch.randn(3, 224, 224), torch.randn(2, 1, 224, 224)]:
        with pytest.raises(ValueError, match=r"pixel_values: expected Tensor\[B, 3, 224, 224\]"):
            model.embed_vision(bad)
    with pytest.raises(ValueError, match="pixel_values: expected a floating-point"):
        model.embed_vision(torch.zeros(1, 3, 224, 224, dtype=torch.uint8))
    for bad in [torch.randn(2, 1, 128, 204), torch.randn(2, 3, 1, 128, 200), torch.randn(0, 3, 1, 128, 204)]:
        with pytest.raises(ValueError, match=r"features: expected Tensor\[B, clips, 1, 128, 204\]"):
            model.embed_audio(bad)


def test_inputs_follow_the_model_dtype(checkpoint):
    bf16 = load_imagebind(checkpoint, device="cpu", dtype=torch.bfloat16, **SIZES)
    out = bf16.embed_vision(torch.randn(1, 3, 224, 224, dtype=torch.float64))
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def test_huge_layout_of_meta_loads(meta, monkeypatch, tmp_path):
    """Meta's imagebind_huge() key/shape layout (built on the meta device: no memory) loads into
    ImageBind() with its default sizes."""
    linspace = torch.linspace  # Meta calls .item() on a linspace, impossible on the meta device
    monkeypatch.setattr(torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "device": "cpu"}))
    with torch.device("meta"):
        huge = meta.imagebind_huge()
    monkeypatch.undo()
    state = huge.state_dict()
    path = tmp_path / "huge_layout.pth"
    torch.save(state, path)
    model = load_imagebind(path, device="meta")
    ours = model.state_dict()
    assert len(ours) > 0
    for key, value in ours.items():
        assert value.shape == state[key].shape, key
    assert ours["modality_trunks.vision.blocks.31.attn.in_proj_weight"].shape == (3 * 1280, 1280)
    assert ours["modality_trunks.audio.blocks.11.attn.bias_k"].shape == (1, 1, 768)
    assert ours["modality_heads.vision.2.weight"].shape == (1024, 1280)
    assert ours["modality_trunks.text.blocks.23.attn.in_proj_weight"].shape == (3 * 1024, 1024)
    assert ours["modality_heads.text.proj.1.weight"].shape == (1024, 1024)
    towers = [k for k in state if k.split(".")[1] in ("vision", "audio", "text")]
    assert sorted(towers) == sorted([*ours, "modality_preprocessors.text.mask"])  # + Meta's fixed mask


def test_defaults_are_imagebind_huge(meta):
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(ImageBind).parameters.items()}
    assert {k: defaults[k] for k in SIZES} == dict(
        vision_embed_dim=1280, vision_num_blocks=32, vision_num_heads=16,
        audio_embed_dim=768, audio_num_blocks=12, audio_num_heads=12,
        text_embed_dim=1024, text_num_blocks=24, text_num_heads=16, out_embed_dim=1024,
    )  # fmt: skip


def test_other_modalities_are_ignored(meta_model, model):
    keys = meta_model.state_dict().keys()
    others = [k for k in keys if k.split(".")[1] in ("depth", "thermal", "imu")]
    assert others  # the checkpoint has them...
    assert not any(k.split(".")[1] not in ("vision", "audio", "text") for k in model.state_dict())  # ...we don't


def test_missing_parameter_is_named(meta_model):
    state = dict(meta_model.state_dict())
    del state["modality_trunks.audio.blocks.1.attn.bias_k"]
    with pytest.raises(ValueError, match=r"modality_trunks\.audio\.blocks\.1\.attn\.bias_k.*missing"):
        load_imagebind(state, device="cpu", **SIZES)
    state = dict(meta_model.state_dict())
    del state["modality_postprocessors.audio.1.log_logit_scale"]
    with pytest.raises(ValueError, match=r"log_logit_scale"):
        load_imagebind(state, device="cpu", **SIZES)


def test_misshaped_parameter_is_named(meta_model):
    state = dict(meta_model.state_dict())
    state["modality_preprocessors.vision.pos_embedding_helper.pos_embed"] = torch.zeros(1, 197, 48)
    with pytest.raises(ValueError, match=r"pos_embedding_helper\.pos_embed.*\(1, 197, 48\).*\(1, 257, 48\)"):
        load_imagebind(state, device="cpu", **SIZES)


def test_checkpoint_for_other_sizes_is_refused(meta_model):
    # more blocks in the checkpoint than in the model
    with pytest.raises(ValueError, match=r"unexpected parameter 'modality_trunks\.vision\.blocks\.1\."):
        load_imagebind(meta_model.state_dict(), device="cpu", **{**SIZES, "vision_num_blocks": 1})
    # other widths
    with pytest.raises(ValueError, match=r"modality_preprocessors\.vision\..*shape"):
        load_imagebind(meta_model.state_dict(), device="cpu", **{**SIZES, "vision_embed_dim": 64})


def test_legacy_format_and_missing_file(meta_model, tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save(meta_model.state_dict(), path, _use_new_zipfile_serialization=False)
    pixels = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(
        load_imagebind(path, device="cpu", **SIZES).embed_vision(pixels),
        meta_forward(meta_model, "vision", pixels), atol=1e-4, rtol=0,
    )  # fmt: skip
    with pytest.raises(ValueError, match="checkpoint: no such file"):
        load_imagebind(tmp_path / "absent.pth", device="cpu", **SIZES)


def test_bad_dtype_is_refused(checkpoint):
    with pytest.raises(ValueError, match="dtype"):
        load_imagebind(checkpoint, device="cpu", dtype=torch.float16, **SIZES)


def test_default_checkpoint_comes_from_the_hub_cache(meta_model, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    calls = []

    def fake_download(url, dst, progress=True):
        calls.append(url)
        torch.save(meta_model.state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    first = load_imagebind(device="cpu", **SIZES)
    assert calls == ["https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"]
    assert (tmp_path / "checkpoints" / "imagebind_huge.pth").is_file()
    second = load_imagebind(device="cpu", **SIZES)  # cached: no second download
    assert len(calls) == 1
    pixels = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(first.embed_vision(pixels), second.embed_vision(pixels))


def test_meta_checkpoint_folder_comes_before_the_hub_cache(meta_model, monkeypatch, tmp_path):
    """Meta's imagebind_huge(pretrained=True) keeps the file in ./.checkpoints: found there first,
    before the torch hub cache, and nothing is downloaded."""
    hub, work = tmp_path / "hub", tmp_path / "work"
    (hub / "checkpoints").mkdir(parents=True)
    (work / ".checkpoints").mkdir(parents=True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.chdir(work)
    assert checkpoint_candidates() == [
        str(work / ".checkpoints" / "imagebind_huge.pth"), str(hub / "checkpoints" / "imagebind_huge.pth")
    ]
    assert find_checkpoint() is None
    state = meta_model.state_dict()
    other = {key: value + 1.0 if value.is_floating_point() else value for key, value in state.items()}
    torch.save(other, hub / "checkpoints" / "imagebind_huge.pth")
    assert find_checkpoint() == str(hub / "checkpoints" / "imagebind_huge.pth")
    torch.save(state, work / ".checkpoints" / "imagebind_huge.pth")
    assert find_checkpoint() == str(work / ".checkpoints" / "imagebind_huge.pth")

    def no_download(url, dst, progress=True):
        raise AssertionError("downloaded although a checkpoint was there")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    pixels = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(
        load_imagebind(device="cpu", **SIZES).embed_vision(pixels),
        load_imagebind(work / ".checkpoints" / "imagebind_huge.pth", device="cpu", **SIZES).embed_vision(pixels),
    )


def test_failed_download_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_network(url, dst, progress=True):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(RuntimeError, match=r"imagebind_huge\.pth.*network is unreachable.*checkpoint="):
        load_imagebind(device="cpu", **SIZES)


# --------------------------------------------------------------------------------------------
# Vision inputs: Meta's torchvision transform on the PIL image
# --------------------------------------------------------------------------------------------

META_IMAGE_TRANSFORM = transforms.Compose(
    [
        transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711)),
    ]
)


def _random_image(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 8 + 2, w // 8 + 2, generator=g) * 255
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")[0]
    return (smooth + 20 * torch.randn(3, h, w, generator=g)).clamp(0, 255).round().to(torch.uint8)


@pytest.mark.parametrize("size", [(360, 640), (500, 333), (100, 150), (224, 224), (37, 301)])
def test_vision_inputs_equal_meta_transform(size):
    image = _random_image(*size, seed=sum(size))
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    expected = META_IMAGE_TRANSFORM(pil)
    for given in ([image], [pil], image.unsqueeze(0)):
        out = imagebind_vision_inputs(given)
        assert out.shape == (1, 3, 224, 224) and out.dtype == torch.float32
        torch.testing.assert_close(out[0], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("count", [2, 10])  # 10: the thread-pool path
def test_vision_inputs_batch_of_different_sizes(count):
    images = [_random_image(300 - 7 * i, 400 - 31 * i, i) for i in range(count)]
    out = imagebind_vision_inputs(images)
    assert out.shape == (count, 3, 224, 224)
    for i, image in enumerate(images):
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        torch.testing.assert_close(out[i], META_IMAGE_TRANSFORM(pil), atol=1e-6, rtol=0)


def test_vision_inputs_reject_bad_images():
    with pytest.raises(ValueError, match="images"):
        imagebind_vision_inputs([])
    with pytest.raises(ValueError, match="uint8"):
        imagebind_vision_inputs([torch.rand(3, 50, 50)])


# --------------------------------------------------------------------------------------------
# Audio inputs: Meta's load_and_transform_audio_data, written out
# --------------------------------------------------------------------------------------------


def meta_clip_timepoints(duration: float, clip_duration=2, clips_per_video=3):
    """pytorchvideo's ConstantClipsPerVideoSampler, called until is_last_clip as Meta's
    get_clip_timepoints does."""
    clip = Fraction(clip_duration)
    max_start = Fraction(max(duration - clip, 0))
    uniform = Fraction(max_start, max(clips_per_video - 1, 1))
    points, index = [], 0
    while True:
        start = uniform * index
        index += 1
        points.append((start, start + clip))
        if index >= clips_per_video or uniform * index > max_start:
            return points


def meta_audio(waveform, sample_rate, in_place=True):
    """Meta's loader on a float32 [C, S] waveform (as torchaudio.load returns)."""
    if sample_rate != 16000:
        waveform = AF.resample(waveform, orig_freq=sample_rate, new_freq=16000)
    waveform = waveform.clone()
    clips = []
    for start, end in meta_clip_timepoints(waveform.size(1) / 16000):
        clip = waveform[:, int(start * 16000) : int(end * 16000)]
        if not in_place:
            clip = clip.clone()
        clip -= clip.mean()  # Meta: `waveform -= waveform.mean()` on a view
        fbank = kaldi.fbank(
            clip, htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
            num_mel_bins=128, dither=0.0, frame_length=25, frame_shift=10,
        ).transpose(0, 1)  # fmt: skip
        p = 204 - fbank.size(1)
        fbank = torch.nn.functional.pad(fbank, (0, p)) if p > 0 else fbank[:, :204]
        clips.append(transforms.Normalize(mean=-4.268, std=9.138)(fbank.unsqueeze(0)))
    return torch.stack(clips)


def _noise(channels, seconds, rate, seed):
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * rate)
    ramp = torch.linspace(-0.3, 0.5, n)  # a drifting DC offset: clip means differ
    return 0.2 * torch.randn(channels, n, generator=g) + ramp + 0.1 * torch.arange(channels)[:, None]


def test_clip_bounds_match_pytorchvideo_placement():
    assert audio_clip_bounds(80000) == [(0, 32000), (24000, 56000), (48000, 80000)]  # 5 s: overlapping
    assert audio_clip_bounds(160000) == [(0, 32000), (64000, 96000), (128000, 160000)]  # 10 s
    assert audio_clip_bounds(16000) == [(0, 32000)] * 3  # 1 s: the whole waveform, three times
    assert audio_clip_bounds(32000) == [(0, 32000)] * 3
    for n in [400, 16000, 31999, 32001, 48000, 80000, 96001, 123457, 441000]:
        expected = [(int(s * 16000), int(e * 16000)) for s, e in meta_clip_timepoints(n / 16000)]
        assert audio_clip_bounds(n) == expected, n


@pytest.mark.parametrize(
    "channels, seconds, rate",
    [(2, 5.0, 16000), (1, 10.0, 16000), (2, 3.3, 44100), (1, 1.0, 16000), (2, 1.0, 22050), (1, 7.25, 48000)],
)
def test_audio_inputs_equal_meta_loader(channels, seconds, rate):
    waveform = _noise(channels, seconds, rate, seed=int(seconds * 100) + channels)
    original = waveform.clone()
    out = imagebind_audio_inputs(waveform, rate)
    assert out.shape == (3, 1, 128, 204) and out.dtype == torch.float32
    torch.testing.assert_close(out, meta_audio(waveform, rate), atol=1e-5, rtol=0)
    assert torch.equal(waveform, original)  # the caller's waveform is not modified


def test_in_place_mean_removal_of_overlapping_clips_is_reproduced():
    waveform = _noise(1, 5.0, 16000, seed=7)
    out = imagebind_audio_inputs(waveform, 16000)
    with_copies = meta_audio(waveform, 16000, in_place=False)
    # the effect is real (frames spanning an earlier clip's end differ)...
    assert (out - with_copies).abs().max() > 1e-3
    # ...and ours has it
    torch.testing.assert_close(out, meta_audio(waveform, 16000), atol=1e-5, rtol=0)


def test_short_audio_gives_three_equal_padded_clips():
    out = imagebind_audio_inputs(_noise(1, 1.0, 16000, seed=8), 16000)
    # equal up to rounding: the 2nd and 3rd clips remove a mean that is already ~0
    torch.testing.assert_close(out[1], out[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(out[2], out[0], atol=1e-4, rtol=0)
    frames = 1 + (16000 - 400) // 160  # 98 Kaldi frames in one second
    pad = (0 - (-4.268)) / 9.138
    torch.testing.assert_close(out[:, :, :, frames:], torch.full_like(out[:, :, :, frames:], pad))
    assert not torch.allclose(out[:, :, :, frames - 1], torch.full_like(out[:, :, :, 0], pad))


def test_first_channel_is_used_unless_mixdown():
    stereo = _noise(2, 3.0, 16000, seed=9)
    stereo[1] = 0.5 * torch.randn(stereo.shape[1], generator=torch.Generator().manual_seed(10))
    first = imagebind_audio_inputs(stereo, 16000)
    torch.testing.assert_close(first, meta_audio(stereo, 16000), atol=1e-5, rtol=0)
    mixed = imagebind_audio_inputs(stereo, 16000, mixdown=True)
    torch.testing.assert_close(mixed, meta_audio(stereo.mean(0, keepdim=True), 16000), atol=1e-5, rtol=0)
    assert (mixed - first).abs().max() > 0.1
    mono = imagebind_audio_inputs(stereo[0], 16000)  # Tensor[S] is one channel
    torch.testing.assert_close(mono, meta_audio(stereo[:1], 16000), atol=1e-5, rtol=0)


def test_float64_waveform_is_processed_in_float32():
    waveform = _noise(1, 2.5, 16000, seed=11)
    out = imagebind_audio_inputs(waveform.double(), 16000)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, meta_audio(waveform, 16000), atol=1e-5, rtol=0)


def test_audio_inputs_reject_bad_audio():
    with pytest.raises(ValueError, match="25 ms"):
        imagebind_audio_inputs(torch.randn(399), 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        imagebind_audio_inputs(torch.randn(16000), 0)
    with pytest.raises(ValueError, match="waveform"):
        imagebind_audio_inputs(torch.randn(2, 3, 100), 16000)


def test_end_to_end_with_meta(model, meta_model):
    """Images and sounds through our inputs and model = through Meta's transforms and model."""
    images = [_random_image(300, 400, 12), _random_image(500, 260, 13)]
    pils = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
    expected_v = meta_forward(meta_model, "vision", torch.stack([META_IMAGE_TRANSFORM(p) for p in pils]))
    torch.testing.assert_close(model.embed_vision(imagebind_vision_inputs(images)), expected_v, atol=1e-4, rtol=0)
    sounds = [_noise(2, 1.0, 16000, seed=14), _noise(1, 5.0, 44100, seed=15)]
    rates = [16000, 44100]
    features = torch.stack([imagebind_audio_inputs(s, r) for s, r in zip(sounds, rates)])
    expected_a = meta_forward(meta_model, "audio", torch.stack([meta_audio(s, r) for s, r in zip(sounds, rates)]))
    torch.testing.assert_close(model.embed_audio(features), expected_a, atol=1e-4, rtol=0)
    assert math.isclose(float(model.embed_audio(features[:1]).norm()), 20.0, rel_tol=1e-3)  # 3 equal clips
