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
from cmsf.runs.report import build_report, find_browser, render_in_browser

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
