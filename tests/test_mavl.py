"""MAVL (cmsf.models.mavl) against an independent re-statement of the authors' model and inference
(tests/mavl_reference.py) on small random weights, through a checkpoint file in the authors'
format and key names; loading errors; the ``mavl`` component of load_models."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import torch
from mavl_reference import ReferenceMAVL, randomise, reference_infer
from torchvision.models.resnet import BasicBlock, Bottleneck

from cmsf import ModelLoadError, load_models
from cmsf.models.mavl import PAPER_MAVL, TINY_MAVL, MavlConfig, load_mavl, mavl_detect

SMALL_BOTTLENECK = dataclasses.replace(
    TINY_MAVL, block="bottleneck", num_heads=4, encoder_layers=2, decoder_layers=3, num_queries=30, shorter_side=96
)


def _reference(config: MavlConfig, seed: int) -> ReferenceMAVL:
    block = Bottleneck if config.block == "bottleneck" else BasicBlock
    model = ReferenceMAVL(
        block, list(config.layers), config.d_model, config.num_heads, config.num_points, config.ffn_dim,
        config.encoder_layers, config.decoder_layers, config.num_queries,
    )
    return randomise(model, seed).eval()


def _checkpoint(tmp_path, reference: ReferenceMAVL, name: str = "mavl.pth") -> str:
    path = str(tmp_path / name)
    # as the authors' training script saves it: the state dict next to its arguments and state
    torch.save({"model": reference.state_dict(), "args": argparse.Namespace(lr=1e-4, epochs=10), "epoch": 9}, path)
    return path


def _images(sizes=((90, 150), (200, 120), (90, 150), (64, 64))) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator) for h, w in sizes]


@pytest.mark.parametrize("config", [TINY_MAVL, SMALL_BOTTLENECK], ids=["basic-block", "bottleneck"])
def test_mavl_equals_the_authors_inference_on_their_checkpoint_format(tmp_path, config):
    reference = _reference(config, seed=3)
    model = load_mavl(_checkpoint(tmp_path, reference), config)
    images = _images()  # non-square, portrait, a repeated size (batched together), square upscaled
    detections = mavl_detect(images, model)
    for image, (boxes, scores) in zip(images, detections):
        expected_boxes, expected_scores = reference_infer(reference, image, config.shorter_side)
        assert boxes.shape == (config.num_queries, 4) and scores.shape == (config.num_queries,)
        torch.testing.assert_close(scores, expected_scores, rtol=0, atol=1e-4)
        torch.testing.assert_close(boxes, expected_boxes, rtol=0, atol=0.01)
        # the weights give a spread of objectness and boxes of several sizes: the check is not vacuous
        assert float(expected_scores.max() - expected_scores.min()) > 0.2
        widths = expected_boxes[:, 2] - expected_boxes[:, 0]
        assert float(widths.max() - widths.min()) > 5.0


def test_mavl_state_dict_round_trips_in_the_authors_key_names(tmp_path):
    reference = _reference(TINY_MAVL, seed=4)
    model = load_mavl(_checkpoint(tmp_path, reference), TINY_MAVL)
    ours, theirs = model.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert "backbone.0.body.layer4.0.conv1.weight" in ours and "class_embed.1.weight" in ours


def test_load_mavl_errors_name_the_file_and_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_mavl(tmp_path / "missing.pth")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.pth: not a torch checkpoint"):
        load_mavl(text)
    bare = tmp_path / "bare.pth"
    torch.save({"state_dict": {}}, bare)
    with pytest.raises(ValueError, match=r"bare.pth: expected a dict with a 'model' state dict.*state_dict"):
        load_mavl(bare)
    tiny = _checkpoint(tmp_path, _reference(TINY_MAVL, seed=5), "tiny.pth")
    with pytest.raises(ValueError, match=r"tiny.pth: not an MDef-DETR-minus-language checkpoint.*missing keys"):
        load_mavl(tiny)  # the paper's architecture expected: ResNet-101, 6 + 6 layers
    with pytest.raises(ValueError, match=r"shape mismatches"):
        load_mavl(tiny, dataclasses.replace(TINY_MAVL, num_queries=21))


def test_load_models_mavl_component(tmp_path):
    models = load_models("tiny")
    assert models.proposer == "owlv2" and "mavl" not in models.load().loaded
    with pytest.raises(ModelLoadError, match="mavl='/path/to/MDef_DETR_minus_language_r101_epoch10.pth'"):
        models.mavl
    with pytest.raises(ValueError, match=r"mavl: no file at .*nowhere.pth.*MDef_DETR_minus_language_r101_epoch10.pth"):
        load_models("tiny", mavl=tmp_path / "nowhere.pth")  # at once, as other local paths
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    foreign = load_models("tiny", mavl=text)
    assert foreign.proposer == "mavl"
    with pytest.raises(ModelLoadError, match=r"notes.pth.*MDef_DETR_minus_language_r101_epoch10.pth"):
        foreign.mavl
    wrong = load_models("tiny", mavl=_checkpoint(tmp_path, _reference(TINY_MAVL, seed=6)))
    with pytest.raises(ModelLoadError, match="missing keys"):
        wrong.mavl
    with pytest.raises(ValueError, match="mavl: expected"):
        load_models("tiny", mavl=3)
    random_models = load_models("tiny", mavl="random")
    assert random_models.proposer == "mavl" and random_models.mavl.config == TINY_MAVL
    assert "random" in random_models.source("mavl")
    assert load_models("paper-random", mavl="random").source("mavl") == "random weights, paper mavl config"


def test_paper_mavl_is_the_authors_architecture():
    assert PAPER_MAVL == MavlConfig(
        block="bottleneck", layers=(3, 4, 23, 3), d_model=256, num_heads=8, num_points=4, ffn_dim=1024,
        encoder_layers=6, decoder_layers=6, num_queries=300, shorter_side=800,
    )
