"""AVSBench-semantic: the reader (cmsf.io.avss), the official metrics (cmsf.semantic_metrics) and
`eval --subset avss` against an independent re-statement of AVSBench's avss code."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from avss_fixture import CLASS_NAMES, fixture_palette, make_avss, write_colour_png, write_predictions
from avss_reference import batch_miou_fscore, color_mask_to_label, get_palette, official_figures, video_labels
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cmsf.io import avss
from cmsf.runs.avss_eval import evaluate_avss
from cmsf.runs.evaluate import VideoError
from cmsf.semantic_metrics import SemanticTotals, frame_scores


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory):
    return make_avss(tmp_path_factory.mktemp("avss") / "release")


def test_palette_equals_reference_and_fixture() -> None:
    assert avss.palette().tolist() == get_palette().tolist() == fixture_palette().tolist()
    assert len({tuple(c) for c in avss.palette().tolist()}) == avss.NUM_CLASSES


def test_metadata_by_column_name(release) -> None:
    videos = avss.list_videos(release.root, "test")
    assert [v.uid for v in videos] == [v.uid for v in release.split("test")]
    assert videos[0].label == "v1s" and videos[0].a_obj == "obj0" and videos[0].num_frames == 5
    train = avss.list_videos(release.root, "train")[0]
    assert train.annotated() == [True] + [False] * 9
    assert avss.read_classes(release.root) == CLASS_NAMES


def test_ground_truth_equals_reference_decoding(release) -> None:
    pal = get_palette()
    for video in avss.read_metadata(release.root):
        gt, annotated, off = avss.load_ground_truth(release.root, video)
        expected = video_labels(release.root / video.label / video.uid / "labels_rgb", pal)
        assert torch.equal(gt, expected), video.uid
        assert off == 0 and int(annotated.sum()) == len(avss.gt_paths(release.root, video))


def test_masks_beyond_the_needed_ones_are_read_as_the_reference_reads_them(release, tmp_path: Path) -> None:
    """A v1s train video with 3 masks: the reference reads the 3 (it counts the folder's PNGs)."""
    root = tmp_path / "copy"
    shutil.copytree(release.root, root)
    folder = root / "v1s" / "s4vid_f" / "labels_rgb"
    shutil.copy(folder / "0.png", folder / "1.png")
    shutil.copy(folder / "0.png", folder / "2.png")
    video = [v for v in avss.read_metadata(root) if v.uid == "s4vid_f"][0]
    gt, annotated, _ = avss.load_ground_truth(root, video)
    assert annotated.tolist() == [True] * 3 + [False] * 7
    assert torch.equal(gt, video_labels(folder, get_palette()))
    pred = write_predictions(tmp_path / "pred", release.split("train"))
    summary = evaluate_avss(root, tmp_path / "out", split="train", pred_dir=pred)
    assert abs(summary["miou"] - official_figures(root, "train", pred)["miou"]) <= 1e-6
    (folder / "1.png").unlink()
    with pytest.raises(ValueError, match="1.png: missing while later masks"):
        avss.load_ground_truth(root, video)


def test_frames_resized_bilinear(release) -> None:
    video = [v for v in avss.read_metadata(release.root) if v.uid == "v2vid_c"][0]
    clip = avss.load_video(release.root, video)
    assert clip.frames.shape == (10, 3, 224, 224) and clip.frames.dtype == torch.uint8
    with Image.open(avss.frame_paths(release.root, video)[3]) as image:
        expected = np.asarray(image.convert("RGB").resize((224, 224), Image.BILINEAR))
    assert np.array_equal(clip.frames[3].permute(1, 2, 0).numpy(), expected)
    assert abs(clip.waveform.shape[-1] / clip.sample_rate - 10.0) < 1e-3


@given(st.integers(1, 6), st.integers(1, 9), st.integers(0, 2**31 - 1))
@settings(max_examples=40, deadline=None)
def test_frame_scores_equal_reference(frames: int, classes: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    nclass = classes + 1
    pred = torch.randint(0, nclass, (frames, 7, 9), generator=g)
    target = torch.randint(0, nclass, (frames, 7, 9), generator=g) * (torch.rand(frames, 7, 9, generator=g) < 0.7)
    iou, fscore, counts = frame_scores(pred, target, nclass)
    logits = torch.nn.functional.one_hot(pred, nclass).permute(0, 3, 1, 2).float()
    for k in range(frames):
        ref_iou, ref_f, ref_count = batch_miou_fscore(logits[k : k + 1], target[k : k + 1], nclass)
        assert torch.equal(iou[k], ref_iou) and torch.equal(fscore[k], ref_f)
        assert torch.equal(counts[k].float(), ref_count)


@pytest.mark.parametrize("split", ["test", "train", "val"])
def test_pred_dir_equals_official(release, tmp_path: Path, split: str) -> None:
    pred = write_predictions(tmp_path / "pred", release.split(split))
    summary = evaluate_avss(release.root, tmp_path / "out", split=split, pred_dir=pred)
    official = official_figures(release.root, split, pred)
    assert abs(summary["miou"] - official["miou"]) <= 1e-6
    assert abs(summary["fscore"] - official["fscore"]) <= 1e-6
    assert abs(summary["variants"]["miou_present"] - official["miou_present"]) <= 1e-6
    assert abs(summary["variants"]["fscore_present"] - official["fscore_present"]) <= 1e-6
    assert abs(summary["variants"]["miou_no_bg"] - official["miou_no_bg"]) <= 1e-6
    with open(tmp_path / "out" / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == CLASS_NAMES
    with open(tmp_path / "out" / "per_video.csv") as f:
        assert [r["uid"] for r in csv.DictReader(f)] == [v.uid for v in release.split(split)]


def test_batch_size_and_exactness(release, tmp_path: Path) -> None:
    pred = write_predictions(tmp_path / "pred", release.split("test"), seed=5)
    for batch in (1, 4):
        summary = evaluate_avss(release.root, tmp_path / f"out{batch}", pred_dir=pred, batch_size=batch)
        official = official_figures(release.root, "test", pred, batch_size=batch)
        assert summary["miou"] == official["miou"] and summary["fscore"] == official["fscore"]


def test_perfect_predictions_and_annotated_variant(release, tmp_path: Path) -> None:
    """Ground truth given back as predictions: every class present scores 1 on annotated frames;
    a v1 video's left-out padding predictions count as background, as its padded truth."""
    pred = tmp_path / "pred"
    for video in avss.list_videos(release.root, "test"):
        (pred / video.uid).mkdir(parents=True)
        for k, path in enumerate(avss.gt_paths(release.root, video)):
            shutil.copy(path, pred / video.uid / f"{video.uid}_{k}.png")
    summary = evaluate_avss(release.root, tmp_path / "out", pred_dir=pred, resize_pred=True)
    assert summary["variants"]["miou_present"] == pytest.approx(1.0)
    assert summary["variants"]["miou_present_annotated"] == pytest.approx(1.0)
    assert summary["variants"]["binary_miou"] == pytest.approx(1.0)
    official = official_figures(release.root, "test", pred)
    assert abs(summary["miou"] - official["miou"]) <= 1e-6


def test_size_mismatch_refused_unless_resize(release, tmp_path: Path) -> None:
    pred = write_predictions(tmp_path / "pred", release.split("test"), size=(240, 360))
    with pytest.raises(VideoError, match="224 × 224"):
        evaluate_avss(release.root, tmp_path / "out", pred_dir=pred)
    assert len(json.loads((tmp_path / "out" / "errors.json").read_text())) == 5
    summary = evaluate_avss(release.root, tmp_path / "out", pred_dir=pred, resize_pred=True)
    official = official_figures(release.root, "test", pred)
    assert abs(summary["miou"] - official["miou"]) <= 1e-6
    assert not (tmp_path / "out" / "errors.json").exists()


def test_readers_refuse_what_they_cannot_read(release, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(release.root, root)
    pred = write_predictions(tmp_path / "pred", release.split("test"))
    (root / "label2idx.json").unlink()
    with pytest.raises(FileNotFoundError, match="label2idx.json"):
        evaluate_avss(root, tmp_path / "out", pred_dir=pred)
    (root / "label2idx.json").write_text(json.dumps({n: i + 1 for i, n in enumerate(CLASS_NAMES[:70])}))
    with pytest.raises(ValueError, match="70 classes, expected 71"):
        evaluate_avss(root, tmp_path / "out", pred_dir=pred)
    shutil.copy(release.root / "label2idx.json", root / "label2idx.json")
    shutil.rmtree(root / "v2" / "v2vid_d")
    with pytest.raises(FileNotFoundError, match="v2vid_d"):
        evaluate_avss(root, tmp_path / "out", pred_dir=pred)
    shutil.copytree(release.root / "v2" / "v2vid_d", root / "v2" / "v2vid_d")
    (pred / "v2vid_c" / "v2vid_c_9.png").unlink()
    with pytest.raises(FileNotFoundError, match="v2vid_c_9.png"):
        evaluate_avss(root, tmp_path / "out", pred_dir=pred)


def test_one_bad_video_never_loses_the_others(release, tmp_path: Path) -> None:
    pred = write_predictions(tmp_path / "pred", release.split("test"))
    (pred / "v2vid_d" / "v2vid_d_3.png").write_bytes(b"not a png")
    with pytest.raises(VideoError, match="1 of 5"):
        evaluate_avss(release.root, tmp_path / "out", pred_dir=pred)
    errors = json.loads((tmp_path / "out" / "errors.json").read_text())
    assert list(errors) == ["v2vid_d"] and "not a readable image" in errors["v2vid_d"]
    assert not (tmp_path / "out" / "summary.json").exists()


def test_off_palette_colours_count_as_background(tmp_path: Path) -> None:
    release = make_avss(tmp_path / "release", off_palette=7)
    pred = write_predictions(tmp_path / "pred", release.split("test"))
    summary = evaluate_avss(release.root, tmp_path / "out", pred_dir=pred)
    official = official_figures(release.root, "test", pred)
    assert abs(summary["miou"] - official["miou"]) <= 1e-6
    assert summary["off_palette_pixels"]["gt"] > 0


def test_written_predictions_read_back(tmp_path: Path) -> None:
    video = avss.AvssVideo("u1", "test", "v2")
    classes = torch.randint(0, 71, (10, 224, 224))
    avss.write_predictions(tmp_path, video, classes)
    back, off = avss.read_predictions(tmp_path, video)
    assert torch.equal(back, classes) and off == 0
    with pytest.raises(ValueError, match="indices in 0"):
        avss.write_predictions(tmp_path, video, classes + 1)


def test_totals_refuse_bad_input() -> None:
    totals = SemanticTotals(3)
    with pytest.raises(ValueError, match="class indices"):
        totals.add(torch.full((2, 2, 2), 3), torch.zeros(2, 2, 2, dtype=torch.long), torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="annotated"):
        zeros = torch.zeros(2, 2, 2, dtype=torch.long)
        totals.add(zeros, zeros, torch.ones(3, dtype=torch.bool))


@given(st.integers(0, 2**31 - 1), st.booleans())
@settings(max_examples=30, deadline=None)
def test_colour_decoding_equals_reference(seed: int, repeated: bool) -> None:
    """Palette colours, colours near them and random ones; optionally a palette with a colour
    repeated (the first class wins, as numpy's argmax)."""
    rng = np.random.default_rng(seed)
    pal = get_palette()
    if repeated:
        pal = pal.copy()
        pal[int(rng.integers(2, 71))] = pal[int(rng.integers(1, 71))]
    picks = pal[rng.integers(0, 71, (6, 9))]
    noise = rng.integers(-1, 2, picks.shape) * (rng.random((6, 9, 1)) < 0.2)
    rgb = np.clip(picks + noise, 0, 255).astype(np.uint8)
    rgb[0, :3] = rng.integers(0, 256, (3, 3))
    classes, off = avss.colours_to_classes(torch.from_numpy(rgb), torch.from_numpy(pal.astype(np.uint8)))
    expected = color_mask_to_label(Image.fromarray(rgb), pal)
    assert classes.tolist() == expected.tolist()
    matched = np.stack([np.all(rgb == c, axis=-1) for c in pal]).any(0)
    assert off == int((~matched).sum())


def test_fixture_colours_round_trip(tmp_path: Path) -> None:
    classes = np.arange(71).reshape(1, 71).repeat(3, 0)
    path = write_colour_png(tmp_path / "m.png", classes)
    rgb = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy())
    mask, off = avss.colours_to_classes(rgb)
    assert mask.tolist() == classes.tolist() and off == 0
