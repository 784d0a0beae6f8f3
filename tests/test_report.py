"""``cmsf report``: report.html of an eval run on the miniature AVSBench — self-contained, well
formed, every video in its table, the strips, the sweep's chart — and, where Chromium is
installed, rendered by a real headless browser (screenshot, sorting script)."""

from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from avsbench_fixture import make_avsbench, write_predictions
from click.testing import CliRunner
from PIL import Image

from cmsf.cli import commands as cli
from cmsf.runs.report import build_report, find_browser, render_in_browser, svg_lines

VOID = {"meta", "img", "br", "hr", "input", "link", "col", "source", "wbr", "area", "base"}
SVG_LEAVES = {"line", "rect", "circle", "polyline", "path"}


class Structure(HTMLParser):
    """Checks that every element is closed in order; collects img sources and table rows."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.errors: list[str] = []
        self.cells: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def parse(text: str) -> Structure:
    parser = Structure()
    parser.feed(text)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def pred_run(tmp_path_factory):
    """A ``cmsf eval --pred-dir`` run of the S4 test split: shifted ground truth, one video far off."""
    base = tmp_path_factory.mktemp("report")
    mini = make_avsbench(base / "avsbench")
    for index, video in enumerate(mini.split("s4", "test")):
        write_predictions(base / "p", video, np.roll(video.gt, shift=8 + 30 * index, axis=2))
    out = base / "run"
    result = CliRunner().invoke(cli.main, ["eval", "--root", str(mini.root), "--subset", "s4", "--pred-dir", str(base / "p"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return mini, out


def test_report_of_an_eval_run_is_self_contained_and_complete(pred_run):
    mini, out = pred_run
    result = CliRunner().invoke(cli.main, ["report", str(out)])
    assert result.exit_code == 0, result.output
    path = out / "report.html"
    assert result.output.strip() == str(path)
    text = path.read_text(encoding="utf-8")
    structure = parse(text)
    assert structure.errors == [] and structure.stack == []
    # self-contained: every picture inline, nothing fetched
    assert structure.images and all(src.startswith("data:image/jpeg;base64,") for src in structure.images)
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)
    # 3 videos: 1 best and 1 worst strip (half each), 5 frames × 3 rows each
    assert len(structure.images) == 2 * 5 * 3
    assert text.count('class="strip"') == 2
    summary = json.loads((out / "summary.json").read_text())
    assert f"{summary['miou']:.4f}" in text and f"{summary['variants']['iou_dataset']:.4f}" in text
    for video in mini.split("s4", "test"):
        assert f"<td>{video.name}</td>" in text
    assert text.count("<svg") == 1 and "histogram of per-video mIoU" in text  # no sweep: no sweep chart


def _write_sweep(out: Path, keys: list[str], rows: list[tuple]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*keys, "miou", "fscore", "miou_per_frame", "fscore_per_frame", "iou_dataset", "fscore_dataset", "best"])
    best = max(range(len(rows)), key=lambda i: rows[i][len(keys)])
    for i, row in enumerate(rows):
        writer.writerow([*row, row[-1], "", row[-1], row[-1], "best" if i == best else ""])
    (out / "sweep.csv").write_text(buffer.getvalue())


@pytest.mark.parametrize("keys", [1, 2, 3])
def test_report_draws_the_sweep(pred_run, tmp_path, keys):
    _, run = pred_run
    out = tmp_path / "run"
    out.mkdir()
    for name in ("summary.json", "per_video.csv"):
        (out / name).write_bytes((run / name).read_bytes())
    values = {1: [("0.3",), ("0.5",), ("0.7",)], 2: [(a, b) for a in ("0.3", "0.5") for b in ("0.6", "0.7", "0.8")],
              3: [(a, b, c) for a in ("0.3", "0.5") for b in ("0.6", "0.7") for c in ("softmax", "cosine")]}[keys]
    rows = [(*v, 0.1 + 0.05 * i, 0.2) for i, v in enumerate(values)]
    _write_sweep(out, ["box_threshold", "bind_threshold", "bind_mode"][:keys], rows)
    text = build_report(out, root=tmp_path / "nowhere")
    structure = parse(text)
    assert structure.errors == [] and structure.stack == []
    assert "is not here: pass --root" in text  # no frames: said, not an error
    if keys == 1:
        assert "<polyline" in text and 'aria-label="sweep of box_threshold"' in text
    else:
        assert "heat map" in text
        cells = re.findall(r"<title>box_threshold=([\d.]+) bind_threshold=([\d.]+): miou ([\d.]+)</title>", text)
        assert len(cells) == (6 if keys == 2 else 4)
        if keys == 3:  # each cell: the best over the third key
            assert ("0.5", "0.7", f"{rows[-1][3]:.4f}") in cells and "best over bind_mode" in text
    assert text.count('<tr class="best">') == 1


def test_report_warns_on_stderr_when_the_avsbench_root_moved(pred_run, tmp_path):
    mini, run = pred_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["root"] == str(Path(mini.root).resolve()) and Path(summary["root"]).is_absolute()
    assert Path(summary["pred_dir"]).is_absolute()
    out = tmp_path / "run"
    out.mkdir()
    for name in ("summary.json", "per_video.csv"):
        (out / name).write_bytes((run / name).read_bytes())
    moved = json.loads((out / "summary.json").read_text())
    moved["root"] = str(tmp_path / "moved-away")
    (out / "summary.json").write_text(json.dumps(moved))
    result = CliRunner().invoke(cli.main, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert "moved-away is not here" in result.stderr and "pass --root" in result.stderr
    assert result.stdout.strip() == str(out / "report.html")
    result = CliRunner().invoke(cli.main, ["report", str(out), "--root", str(mini.root)])
    assert result.exit_code == 0 and "warning" not in result.stderr, result.output
    result = CliRunner().invoke(cli.main, ["report", str(out), "--root", str(tmp_path)])  # a folder without the frames
    assert result.exit_code == 0 and "pictures unavailable" in result.stderr and "--root" in result.stderr


def test_one_key_sweep_chart_places_x_by_value_with_round_ticks_and_a_legend_that_fits():
    xs = ["0.05", "0.1", "0.3"]
    series = {"miou": [0.046, 0.05, 0.066], "fscore": [0.1, 0.12, 0.11], "miou_per_frame": [0.046, 0.05, 0.066]}
    svg = svg_lines("bind_threshold", xs, series, best=2)
    ticks = [float(t) for t in re.findall(r'<text x="[\d.]+" y="[\d.]+" text-anchor="end">([\d.]+)</text>', svg)]
    assert ticks == pytest.approx([0.04, 0.06, 0.08, 0.1, 0.12])  # round values (were 0.046, 0.066, …)
    assert ticks[0] <= 0.046 and ticks[-1] >= 0.12
    labels = {m[2]: float(m[0]) for m in re.findall(r'<text x="([\d.]+)" y="([\d.]+)" text-anchor="middle">([\d.]+)</text>', svg)}
    left, middle, right = labels["0.05"], labels["0.1"], labels["0.3"]
    assert (middle - left) / (right - left) == pytest.approx(0.05 / 0.25, abs=0.01)  # by value, not evenly
    width = float(re.search(r'<svg[^>]* width="(\d+)"', svg).group(1))
    legend_x = float(re.search(r'<text x="([\d.]+)"[^>]*>miou_per_frame \(= miou\)</text>', svg).group(1))
    assert legend_x + 7.2 * len("miou_per_frame (= miou)") <= width  # the legend fits and names the equal line
    dashes = re.findall(r'<polyline [^>]*stroke-dasharray="([^"]+)"', svg)
    assert len(dashes) == 3 and len(set(dashes)) == 3  # equal lines (miou, miou_per_frame) still told apart
    assert "1 video ·" in build_report_text_of_one_video()


def build_report_text_of_one_video() -> str:
    import tempfile

    folder = Path(tempfile.mkdtemp())
    (folder / "summary.json").write_text(json.dumps({"subset": "s4", "split": "test", "miou": 0.5}))
    (folder / "per_video.csv").write_text("video,miou,fscore\nv,0.5,0.5\n")
    return build_report(folder, root=folder / "nowhere")


def test_report_errors_name_the_file(tmp_path):
    result = CliRunner().invoke(cli.main, ["report", str(tmp_path)])
    assert result.exit_code == 1 and "summary.json" in result.output
    (tmp_path / "summary.json").write_text("[1]")
    result = CliRunner().invoke(cli.main, ["report", str(tmp_path)])
    assert result.exit_code == 1 and "summary.json" in result.output and "JSON object" in result.output


@pytest.mark.skipif(find_browser() is None, reason="no Chromium on PATH (Debian: apt-get install chromium); the README's install line installs it")
def test_report_renders_in_headless_chromium(pred_run, tmp_path):
    _, out = pred_run
    page = CliRunner().invoke(cli.main, ["report", str(out)]).output.strip()
    shot = tmp_path / "shot.png"
    dom = render_in_browser(Path(page), screenshot=shot, size=(1000, 1400), fragment="#sort=miou-asc")
    # the page's script ran: the video table is sorted by mIoU, ascending
    table = dom[dom.index("<h2>Videos"):]
    order = re.findall(r'<td data-value="([^"]+)">[^<]*</td><td data-value="[^"]*">[^<]*</td><td data-value="[^"]*">[^<]*</td><td data-value="[^"]*">', table)
    assert 'data-key="miou" class="asc"' in table
    values = [float(v) for v in order]
    assert len(values) == 3 and values == sorted(values)
    picture = np.asarray(Image.open(shot).convert("RGB"))
    assert picture.shape == (1400, 1000, 3)
    assert picture.std() > 20  # text, charts and pictures, not a blank page
