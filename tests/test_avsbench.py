"""The AVSBench S4 / MS3 layouts: listing, loading, ground truth, predicted masks."""

from __future__ import annotations

import pytest
import torch
from avsbench_fixture import RATE, SIZE, make_avsbench, write_predictions

from cmsf.io import avsbench
from cmsf.io.avsbench import VideoEntry


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return make_avsbench(tmp_path_factory.mktemp("avsbench"))


def test_list_videos_s4(mini):
    test = avsbench.list_videos(mini.root, "s4", "test")
    assert test == [
        VideoEntry("s4_a", "test", "dog"),
        VideoEntry("s4_b", "test", "guitar"),
        VideoEntry("s4_c", "test", "dog"),
    ]
    assert avsbench.list_videos(mini.root, "S4", "train") == [VideoEntry("s4_t", "train", "guitar")]
    # the subset's own folder works as root too
    assert avsbench.list_videos(mini.root / "Single-source", "s4", "val") == [VideoEntry("s4_v", "val", "dog")]


def test_list_videos_ms3(mini):
    assert avsbench.list_videos(mini.root, "ms3") == [VideoEntry("ms3_a", "test"), VideoEntry("ms3_b", "test")]


def test_split_column_found_by_header(tmp_path):
    base = tmp_path / "Multi-sources"
    base.mkdir()
    (base / "ms3_meta_data.csv").write_text("vid,extra,split\nv1,x,test\nv2,y,train\n")
    assert avsbench.list_videos(tmp_path, "ms3", "test") == [VideoEntry("v1", "test")]


def test_bad_layouts(mini, tmp_path):
    with pytest.raises(ValueError, match="subset.*s4, ms3"):
        avsbench.list_videos(mini.root, "s5")
    with pytest.raises(ValueError, match="'dev'.*test, train, val"):
        avsbench.list_videos(mini.root, "s4", "dev")
    with pytest.raises(FileNotFoundError, match=r"Single-source/s4_meta_data\.csv"):
        avsbench.list_videos(tmp_path, "s4")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        avsbench.list_videos(tmp_path / "nowhere", "s4")
    (tmp_path / "Single-source").mkdir()
    (tmp_path / "Single-source" / "s4_meta_data.csv").write_text("name,start,category\na,0,dog\n")
    with pytest.raises(ValueError, match="no 'split' column"):
        avsbench.list_videos(tmp_path, "s4")


def test_paths_follow_the_official_layout(mini):
    s4 = VideoEntry("s4_a", "test", "dog")
    data = mini.root / "Single-source" / "s4_data"
    assert avsbench.frame_paths(mini.root, "s4", s4)[0] == data / "visual_frames/test/dog/s4_a/s4_a_1.png"
    assert avsbench.audio_path(mini.root, "s4", s4) == data / "audio_wav/test/dog/s4_a.wav"
    assert avsbench.gt_mask_paths(mini.root, "s4", s4)[4] == data / "gt_masks/test/dog/s4_a/s4_a_5.png"
    ms3 = VideoEntry("ms3_a", "test")
    data = mini.root / "Multi-sources" / "ms3_data"
    assert avsbench.frame_paths(mini.root, "ms3", ms3)[2] == data / "visual_frames/ms3_a/ms3_a.mp4_3.png"
    assert avsbench.audio_path(mini.root, "ms3", ms3) == data / "audio_wav/test/ms3_a.wav"
    assert avsbench.gt_mask_paths(mini.root, "ms3", ms3)[0] == data / "gt_masks/test/ms3_a/ms3_a_1.png"
    with pytest.raises(ValueError, match="needs its category"):
        avsbench.frame_paths(mini.root, "s4", VideoEntry("x", "test"))


@pytest.mark.parametrize("subset", ["s4", "ms3"])
def test_load_video_and_gt(mini, subset):
    video = mini.split(subset, "test")[0]
    entry = VideoEntry(video.name, "test", video.category)
    clip = avsbench.load_video(mini.root, subset, entry)
    assert clip.frames.shape == (5, 3, SIZE, SIZE) and clip.frames.dtype == torch.uint8
    assert clip.sample_rate == RATE and clip.waveform.shape == (1, 5 * RATE)
    gt = avsbench.load_gt_masks(mini.root, subset, entry)
    assert gt.dtype == torch.bool and gt.shape == (5, SIZE, SIZE)
    assert torch.equal(gt, torch.from_numpy(video.gt))


def test_s4_train_has_one_mask(mini):
    gt = avsbench.load_gt_masks(mini.root, "s4", VideoEntry("s4_t", "train", "guitar"))
    assert gt.shape == (1, SIZE, SIZE)


def test_missing_files_are_named(mini, tmp_path):
    entry = VideoEntry("ghost", "test", "dog")
    with pytest.raises(FileNotFoundError, match=r"frames of video ghost: .*ghost_1\.png.*ghost_5\.png"):
        avsbench.load_video(mini.root, "s4", entry)
    with pytest.raises(FileNotFoundError, match=r"ground truth of video ghost.*ghost_1\.png"):
        avsbench.load_gt_masks(mini.root, "s4", entry)


def test_pred_masks_round_trip_zero_based(mini, tmp_path):
    entry = VideoEntry("s4_a", "test", "dog")
    masks = torch.zeros(5, 8, 8, dtype=torch.bool)
    for k in range(5):
        masks[k, k, :] = True
    paths = avsbench.write_pred_masks(tmp_path, "s4", entry, masks)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [f"dog/s4_a/s4_a_{k}.png" for k in range(5)]
    assert avsbench.is_complete(tmp_path, "s4", entry)
    assert torch.equal(avsbench.read_pred_masks(tmp_path, "s4", entry, (8, 8)), masks)
    ms3 = VideoEntry("ms3_a", "test")
    paths = avsbench.write_pred_masks(tmp_path, "ms3", ms3, masks)
    assert paths[0].relative_to(tmp_path).as_posix() == "ms3_a/ms3_a_0.png"
    with pytest.raises(ValueError, match=r"Tensor\[5, H, W\]"):
        avsbench.write_pred_masks(tmp_path, "ms3", ms3, masks[:4])


def test_read_pred_masks_written_like_avsbench(mini, tmp_path):
    video = mini.split("ms3", "test")[1]
    write_predictions(tmp_path, video, video.gt)  # mode P, as AVSBench's save_mask writes
    entry = VideoEntry(video.name, "test")
    assert torch.equal(avsbench.read_pred_masks(tmp_path, "ms3", entry, (SIZE, SIZE)), torch.from_numpy(video.gt))


def test_pred_size_mismatch_refused_or_resized(tmp_path):
    entry = VideoEntry("v", "test")
    masks = torch.zeros(5, 4, 4, dtype=torch.bool)
    masks[:, :2, :2] = True
    avsbench.write_pred_masks(tmp_path, "ms3", entry, masks)
    with pytest.raises(ValueError, match=r"v_0\.png.*\(4, 4\).*\(8, 8\)"):
        avsbench.read_pred_masks(tmp_path, "ms3", entry, (8, 8))
    resized = avsbench.read_pred_masks(tmp_path, "ms3", entry, (8, 8), resize=True)
    expected = torch.zeros(5, 8, 8, dtype=torch.bool)
    expected[:, :4, :4] = True
    assert torch.equal(resized, expected)


def test_missing_and_incomplete_predictions(tmp_path):
    a, b = VideoEntry("a", "test"), VideoEntry("b", "test")
    avsbench.write_pred_masks(tmp_path, "ms3", a, torch.zeros(5, 2, 2))
    avsbench.write_pred_masks(tmp_path, "ms3", b, torch.zeros(5, 2, 2))
    (tmp_path / "b" / "b_3.png").unlink()
    assert avsbench.is_complete(tmp_path, "ms3", a) and not avsbench.is_complete(tmp_path, "ms3", b)
    assert avsbench.missing_pred_masks(tmp_path, "ms3", [a, b]) == [tmp_path / "b" / "b_3.png"]
    with pytest.raises(FileNotFoundError, match=r"b_3\.png"):
        avsbench.read_pred_masks(tmp_path, "ms3", b)


def test_resolve_pred_dir(tmp_path):
    assert avsbench.resolve_pred_dir(tmp_path) == tmp_path
    (tmp_path / "pred_masks").mkdir()
    assert avsbench.resolve_pred_dir(tmp_path) == tmp_path / "pred_masks"


def test_audio_for_frame_folder(mini, tmp_path):
    s4 = mini.root / "Single-source/s4_data/visual_frames/test/dog/s4_a"
    assert avsbench.audio_for_frame_folder(s4) == (mini.root / "Single-source/s4_data/audio_wav/test/dog/s4_a.wav").resolve()
    ms3 = mini.root / "Multi-sources/ms3_data/visual_frames/ms3_t"
    assert avsbench.audio_for_frame_folder(ms3) == (mini.root / "Multi-sources/ms3_data/audio_wav/train/ms3_t.wav").resolve()
    assert avsbench.audio_for_frame_folder(tmp_path) is None


def test_gt_gap_is_an_error(tmp_path):
    mini = make_avsbench(tmp_path)
    (tmp_path / "Multi-sources/ms3_data/gt_masks/test/ms3_a/ms3_a_2.png").unlink()
    with pytest.raises(ValueError, match=r"ms3_a_2\.png.*consecutively"):
        avsbench.load_gt_masks(tmp_path, "ms3", VideoEntry("ms3_a", "test"))
    assert mini.root == tmp_path


def test_missing_gt_masks_checks_files_only(tmp_path):
    mini = make_avsbench(tmp_path)
    entries = avsbench.list_videos(tmp_path, "ms3", "test") + [VideoEntry("ghost", "test")]
    assert avsbench.missing_gt_masks(tmp_path, "ms3", entries) == [
        tmp_path / "Multi-sources/ms3_data/gt_masks/test/ghost/ghost_1.png"
    ]
    gap = tmp_path / "Multi-sources/ms3_data/gt_masks/test/ms3_a/ms3_a_2.png"
    gap.unlink()
    assert avsbench.missing_gt_masks(tmp_path, "ms3", entries[:2]) == [gap]
    assert avsbench.missing_gt_masks(tmp_path, "s4", avsbench.list_videos(tmp_path, "s4", "train")) == []
    assert mini.root == tmp_path


def test_unreadable_metadata_csv_names_the_file(tmp_path):
    base = tmp_path / "Multi-sources"
    base.mkdir()
    csv_path = base / "ms3_meta_data.csv"
    csv_path.write_text("video_id,split\n" + "x" * 200_000 + ",test\n")  # over csv's field size limit
    with pytest.raises(ValueError, match=r"ms3_meta_data\.csv: not a readable CSV \(field larger"):
        avsbench.read_metadata(tmp_path, "ms3")
    csv_path.write_bytes(b"video_id,split\n\xff\xfe\xfa,test\n")
    with pytest.raises(ValueError, match=r"ms3_meta_data\.csv: not a readable CSV \(.*utf-8"):
        avsbench.read_metadata(tmp_path, "ms3")


def test_list_paths_shows_a_limit_then_a_count():
    paths = [f"p{i}.png" for i in range(7)]
    assert avsbench.list_paths(paths[:2]) == "p0.png, p1.png"
    assert avsbench.list_paths(paths) == "p0.png, p1.png, p2.png, p3.png, p4.png and 2 more"
    assert avsbench.list_paths(paths, 3, lines=True) == "  p0.png\n  p1.png\n  p2.png\n  … and 4 more"
    assert avsbench.list_paths(paths, 7, lines=True).count("\n") == 6
