"""ImageBind's text tower and tokenizer against Meta's own code (the `imagebind-unofficial` package,
a copy of facebookresearch/ImageBind at its current commit) used as an oracle: same tokens for the
same strings, same embeddings from the same Meta-format state dict.

Meta's `load_and_transform_text` lives in its `data` module (which needs pytorchvideo); it is
`torch.cat([SimpleTokenizer(bpe_path)(t).unsqueeze(0) for t in texts])`, rebuilt here from Meta's
`SimpleTokenizer` and the BPE file Meta ships.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cmsf import imagebind_text_inputs
from cmsf.models.imagebind import load_imagebind
from cmsf.models.imagebind_text import TEXT_CONTEXT_LENGTH, ClipTokenizer, byte_characters, default_bpe_path
from cmsf.models.loading import load_models

SIZES = dict(
    vision_embed_dim=32, vision_num_blocks=1, vision_num_heads=2,
    audio_embed_dim=32, audio_num_blocks=1, audio_num_heads=2,
    text_embed_dim=48, text_num_blocks=2, text_num_heads=4, out_embed_dim=24,
)  # fmt: skip
OTHER_SIZES = dict(
    depth_embed_dim=32, depth_num_blocks=1, depth_num_heads=2,
    thermal_embed_dim=32, thermal_num_blocks=1, thermal_num_heads=2,
    imu_embed_dim=32, imu_num_blocks=1, imu_num_heads=2,
)  # fmt: skip

STRINGS = [
    "a photo of a dog.",
    "Male speech, man speaking",
    "Hello,   World!\n\tIt's   2024 — we're 100% sure.",
    "",
    "   ",
    "café naïve façade Ærøskøbing",
    "Straße ΕΛΛΗΝΙΚΆ кириллица",
    "東京の猫 🐱🎸🥁 emoji 👩‍👩‍👧",
    "tom &amp;amp; jerry &lt;b&gt; &quot;quoted&quot;",
    "mojibake: cafÃ© â€œquotesâ€\x9d",
    "ﬁne ligatures and ＦＵＬＬＷＩＤＴＨ",
    "<|endoftext|> inside <|startoftext|> text",
    "numbers 1234567890 3.14 and a-b_c/d\\e",
    "x" * 500,
    " ".join(["word"] * 200),  # far over 77 tokens: cut, the end token kept last
    " ".join(f"w{i}" for i in range(80)),
]


@pytest.fixture(scope="module")
def meta():
    """Meta's `imagebind.models` modules (the model and the tokenizer)."""
    if importlib.util.find_spec("imagebind") is None:
        pytest.skip("oracle not installed: pip install --no-deps imagebind-unofficial==0.1.1")
    with pytest.MonkeyPatch.context() as mp:
        if "imagebind.data" not in sys.modules:
            mp.setitem(sys.modules, "imagebind.data", types.ModuleType("imagebind.data"))
        from imagebind.models import imagebind_model, multimodal_preprocessors
    return types.SimpleNamespace(model=imagebind_model, preprocessors=multimodal_preprocessors)


@pytest.fixture(scope="module")
def meta_tokenizer(meta):
    package = os.path.dirname(importlib.util.find_spec("imagebind").origin)
    return meta.preprocessors.SimpleTokenizer(bpe_path=os.path.join(package, "bpe", "bpe_simple_vocab_16e6.txt.gz"))


def meta_text_inputs(tokenizer, texts):
    """Meta's `load_and_transform_text(texts, "cpu")`."""
    return torch.cat([tokenizer(t).unsqueeze(0) for t in texts], dim=0)


@pytest.fixture(scope="module")
def meta_model(meta):
    """Meta's ImageBindModel, small, every parameter random (nothing 0 or 1), a text logit scale
    other than its initial one."""
    torch.manual_seed(0)
    model = meta.model.ImageBindModel(**SIZES, **OTHER_SIZES).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "modality_postprocessors.text.1.log_logit_scale":
                p.fill_(math.log(33.0))
            elif p.ndim == 1 and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif p.ndim == 2 and "token_embedding" not in name:
                p.copy_(torch.randn_like(p) * p.shape[1] ** -0.5)
            else:
                p.copy_(0.5 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def model(meta_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("imagebind_text") / "small.pth"
    torch.save(meta_model.state_dict(), path)
    return load_imagebind(path, device="cpu", **SIZES)


def meta_embed_text(meta_model, tokens):
    with torch.no_grad():
        return meta_model({"text": tokens})["text"]


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------


def test_the_shipped_vocabulary_is_metas_file(meta):
    package = os.path.dirname(importlib.util.find_spec("imagebind").origin)
    with open(os.path.join(package, "bpe", "bpe_simple_vocab_16e6.txt.gz"), "rb") as theirs:
        with open(default_bpe_path(), "rb") as ours:
            assert ours.read() == theirs.read()


def test_tokens_equal_meta_on_varied_strings(meta_tokenizer):
    ours = imagebind_text_inputs(STRINGS)
    assert ours.dtype == torch.int64 and ours.shape == (len(STRINGS), TEXT_CONTEXT_LENGTH)
    assert torch.equal(ours, meta_text_inputs(meta_tokenizer, STRINGS))


def test_long_texts_are_cut_with_the_end_token_last():
    tokens = imagebind_text_inputs([" ".join(["word"] * 200)])[0]
    assert int(tokens[0]) == 49406 and int(tokens[-1]) == 49407 and bool((tokens[1:-1] != 0).all())
    assert int(tokens.argmax()) == TEXT_CONTEXT_LENGTH - 1


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=3))
def test_tokens_equal_meta_on_any_unicode(meta_tokenizer, texts):
    assert torch.equal(imagebind_text_inputs(texts), meta_text_inputs(meta_tokenizer, texts))


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("abcdefghij klmn,.'!0123éü")), max_size=300))
def test_tokens_equal_meta_on_word_like_text(meta_tokenizer, text):
    assert torch.equal(imagebind_text_inputs(text), meta_text_inputs(meta_tokenizer, [text]))


def test_byte_characters_are_clips_table(meta):
    table = meta.preprocessors.bytes_to_unicode()
    assert byte_characters() == [table[b] for b in range(256)]


def test_bad_texts_are_refused():
    for bad in [[], None, 3, b"bytes", ["ok", 3]]:
        with pytest.raises(ValueError, match="texts"):
            imagebind_text_inputs(bad)
    with pytest.raises(ValueError, match="bpe_path: no such file"):
        ClipTokenizer("/nonexistent/bpe.txt.gz")


# --------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------


def test_text_embeddings_equal_meta(model, meta_model):
    tokens = imagebind_text_inputs(STRINGS)
    ours = model.embed_text(tokens)
    assert ours.shape == (len(STRINGS), SIZES["out_embed_dim"]) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, meta_embed_text(meta_model, tokens), atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.norm(dim=-1), torch.full((len(STRINGS),), 33.0))  # the trained scale


def test_text_embeddings_equal_meta_on_random_ids(model, meta_model):
    """Ids anywhere in the vocabulary, the end token at varied positions (and once absent: Meta's
    head then takes the largest id's position, the first one on a tie)."""
    generator = torch.Generator().manual_seed(4)
    tokens = torch.randint(0, 49406, (6, TEXT_CONTEXT_LENGTH), generator=generator)
    for row, end in enumerate([1, 5, 40, 76, None, 2]):
        if end is not None:
            tokens[row, 0], tokens[row, end], tokens[row, end + 1 :] = 49406, 49407, 0
    tokens[4, 10] = tokens[4, 30] = 49405
    torch.testing.assert_close(model.embed_text(tokens), meta_embed_text(meta_model, tokens), atol=1e-4, rtol=0)


def test_causality_later_tokens_do_not_change_the_embedding(model):
    tokens = imagebind_text_inputs(["a dog barking"])
    changed = tokens.clone()
    changed[0, 10:] = 7  # after the end token: no effect when attention is causal
    torch.testing.assert_close(model.embed_text(tokens), model.embed_text(changed), atol=1e-6, rtol=0)


def test_bfloat16_text_agrees_with_float32(meta_model, model):
    bf16 = load_imagebind(meta_model.state_dict(), device="cpu", dtype=torch.bfloat16, **SIZES)
    tokens = imagebind_text_inputs(STRINGS[:5])
    out = bf16.embed_text(tokens)
    assert out.dtype == torch.float32
    assert bool((torch.cosine_similarity(out, model.embed_text(tokens)) > 0.98).all())


def test_embed_text_checks_its_tokens(model):
    for shape in [(2, 76), (0, 77), (77,)]:
        bad = torch.zeros(shape, dtype=torch.int64)
        with pytest.raises(ValueError, match=r"tokens: expected Tensor\[N, 77\]"):
            model.embed_text(bad)
    with pytest.raises(ValueError, match="tokens: expected integer"):
        model.embed_text(torch.zeros(1, 77))
    with pytest.raises(ValueError, match=r"tokens: ids must lie in \[0, 49408\)"):
        model.embed_text(torch.full((1, 77), 49408))


def test_a_checkpoint_without_the_text_tower_is_named(meta_model):
    state = {k: v for k, v in meta_model.state_dict().items() if ".text." not in k}
    with pytest.raises(ValueError, match=r"checkpoint: parameter 'modality_\w+\.text\."):
        load_imagebind(state, device="cpu", **SIZES)


def test_tiny_preset_has_a_text_tower():
    imagebind = load_models("tiny", device="cpu").imagebind
    out = imagebind.embed_text(imagebind_text_inputs(["dog", "piano"]))
    assert out.shape == (2, imagebind.out_embed_dim) and bool(torch.isfinite(out).all())
    assert not torch.allclose(out[0], out[1])
