"""``report.html`` of a ``cmsf eval --subset avss`` run, and :func:`write_report` for any run
(AVSS runs here, S4 / MS3 runs by :mod:`cmsf.runs.report`).

An AVSS report shows the run's official figures and every variant, its settings, a per-class
table (``per_class.csv``: IoU, F and frame count per class, sortable), a sweep's grid
(``sweep.csv``: curves or heat map, as :mod:`cmsf.runs.report` draws them), the best and worst videos
as strips of frame / ground-truth colour mask / predicted colour mask in the AVSS palette with
each frame's mean IoU over the classes present in it, and a sortable table of every video. It
reads what the run wrote and, for the strips, the release under the run's root (or ``root``);
missing pictures are said on the page, never an error.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from cmsf.io import avss
from cmsf.io.files import atomic_write_text
from cmsf.runs import report
from cmsf.runs.progress import Log, no_log
from cmsf.semantic_metrics import frame_scores

FIGURE_HELP = {
    "miou": "official: mean over all 71 classes, padded frames counted",
    "fscore": "official F (β² = 0.3): mean over all 71 classes, padded frames counted",
    "miou_present": "mean over the classes that occur (test.py's print, TACO)",
    "fscore_present": "F, mean over the classes that occur",
    "miou_annotated": "mean over all classes, annotated frames only",
    "fscore_annotated": "F, annotated frames only",
    "miou_present_annotated": "classes that occur, annotated frames only",
    "fscore_present_annotated": "F, classes that occur, annotated frames only",
    "miou_no_bg": "mean over the 70 object classes",
    "fscore_no_bg": "F, mean over the 70 object classes",
    "binary_miou": "binary view (foreground = any class), AVSBench-object mIoU",
    "binary_fscore": "binary view, AVSBench-object F-score",
}


def _cards(summary: Mapping[str, Any]) -> str:
    figures = {"miou": summary.get("miou"), "fscore": summary.get("fscore"), **(summary.get("variants") or {})}
    cards = []
    for name, text in FIGURE_HELP.items():
        if name in figures:
            css = "card" if name in ("miou", "fscore") else "card small"
            cards.append(report._tag("div", f"<b>{report._fmt(figures[name])}</b><span>{name}</span>", class_=css,
                                     title=text))  # fmt: skip
    return f'<h2>Figures</h2><div class="cards">{"".join(cards)}</div>'


def _class_table(rows: list[dict[str, str]]) -> str:
    names = report.row_names(rows)
    headers = [(c, c) for c in names]
    cells = [
        [(html.escape(row[c]), None if c == "name" else row[c]) if c in ("name", "index") or c.startswith("frames")
         else (report._fmt(report._number(row[c])), row[c]) for c in names]
        for row in rows
        if report._number(row.get("frames")) or report._number(row.get("frames_annotated"))
    ]
    intro = "Classes seen in the split (a class with no frame is left out; it counts 0 in the official mean)."
    return f'<h2>Per class</h2><p class="sub">{intro}</p><div class="scroll">{report._table(headers, cells)}</div>'


def _colour_image(classes: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """``classes (Tensor[H, W])`` → ``Tensor[3, H, W]`` uint8 in palette colours."""
    return colours[classes.long()].permute(2, 0, 1).contiguous()


def _strip(title: str, root: Path, video: avss.AvssVideo, pred_dir: Path) -> str:
    heading = f"<h3>{html.escape(title)}</h3>"
    try:
        gt, annotated, _ = avss.load_ground_truth(root, video)
        pred, _ = avss.read_predictions(pred_dir, video, resize=True)
        frames = avss.load_video(root, video).frames
    except (OSError, ValueError) as error:
        return f'<div class="strip">{heading}<p class="note">pictures unavailable: {html.escape(str(error))}</p></div>'
    shown = [k for k in range(video.num_frames) if bool(annotated[k])]
    iou, _, counts = frame_scores(pred[shown], gt[shown], avss.NUM_CLASSES)
    colours = avss.palette()
    rows = {
        "frame": [report._data_uri(frames[k]) for k in shown],
        "truth": [report._data_uri(_colour_image(gt[k], colours)) for k in shown],
        "prediction": [report._data_uri(_colour_image(pred[k], colours)) for k in shown],
    }
    body = "".join(
        f'<tr><td class="label">{name}</td>'
        + "".join(report._tag("td", report._tag("img", src=uri, alt=f"{name} {k}", width=report.THUMBNAIL))
                  for k, uri in enumerate(uris))  # fmt: skip
        + "</tr>"
        for name, uris in rows.items()
    )
    means = [float(i[c].sum() / c.sum()) if bool(c.any()) else None for i, c in zip(iou, counts)]
    body += '<tr><td class="label">mIoU</td>' + "".join(f"<td>{report._fmt(m, 3)}</td>" for m in means) + "</tr>"
    return f'<div class="strip">{heading}<div class="scroll"><table>{body}</table></div></div>'


def _strips(summary: Mapping[str, Any], rows: list[dict[str, str]], run_dir: Path, root: Optional[Path],
            examples: int) -> str:  # fmt: skip
    data_root = Path(root) if root is not None else Path(str(summary.get("root", "")))
    pred_dir = run_dir / "pred_masks" if summary.get("pipeline") else Path(str(summary.get("pred_dir", "")))
    scored = sorted((r for r in rows if report._number(r.get("miou")) is not None), key=lambda r: -float(r["miou"]))
    each = min(examples, max(1, len(scored) // 2))
    intro = ("Each strip: the annotated frames, the ground truth and the prediction in the AVSS palette, and "
             f"each frame's mean IoU over the classes in it. Frames from {data_root}.")  # fmt: skip
    parts = ["<h2>Best and worst videos</h2>" + report._tag("p", html.escape(intro), class_="sub")]
    if not data_root.is_dir():
        return parts[0] + report._tag("p", html.escape(f"{data_root} is not here: pass --root."), class_="note")
    for label, chosen in (("best", scored[:each]), ("worst", scored[each:][::-1][:each])):
        for row in chosen:
            video = avss.AvssVideo(row["uid"], str(summary.get("split", "test")), row["label"], row.get("a_obj", ""))
            title = f'{label}: {video.uid} ({video.label}) — mIoU {float(row["miou"]):.4f}'
            parts.append(_strip(title, data_root, video, pred_dir))
    return "".join(parts)


def build_avss_report(run_dir: Path, *, root: Optional[Path] = None, examples: int = 3) -> str:
    """The HTML text of an AVSS run's report (see the module docstring).

    Raises:
        FileNotFoundError: ``summary.json``, ``per_video.csv`` or ``per_class.csv`` missing.
        ValueError: one of them unreadable.
    """
    run_dir = Path(run_dir)
    summary = report._read_json(run_dir / "summary.json")
    rows = report._read_csv(run_dir / "per_video.csv", ("uid", "label", "miou", "fscore"))
    classes = report._read_csv(run_dir / "per_class.csv", ("index", "name", "iou", "fscore", "frames"))
    sweep_path = run_dir / "sweep.csv"  # a sweep's grid (cmsf.runs.avss_sweep): curves or heat map, as S4's
    sweep = report._sweep_section(summary, report._read_csv(sweep_path, ("miou", "fscore"))) if sweep_path.is_file() else ""
    what = summary.get("pipeline") or "predictions"
    title = f'{what} on AVSBench-semantic {summary.get("split", "")}'
    headers = [(c, c) for c in report.row_names(rows)]
    cells = [[(html.escape(r[c]), None) if c in ("uid", "label", "a_obj") else (html.escape(r[c]), r[c])
              if c == "frames" or c.startswith("off_palette") else (report._fmt(report._number(r[c])), r[c])
              for c in report.row_names(rows)] for r in rows]  # fmt: skip
    parts = [
        f"<main><h1>{html.escape(title)}</h1>",
        report._tag("p", html.escape(f"{len(rows)} videos · cmsf report of {run_dir}"), class_="sub"),
        _cards(summary), sweep, report._settings_section(summary), _class_table(classes),
        _strips(summary, rows, run_dir, root, examples),
        f'<h2>Videos ({len(rows)})</h2><div class="scroll">{report._table(headers, cells)}</div></main>',
    ]  # fmt: skip
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)} — cmsf report</title><style>{report._STYLE}</style></head><body>"
        + "".join(parts)
        + f"<script>{report._SCRIPT}</script></body></html>\n"
    )


def write_report(
    run_dir: Path, *, root: Optional[Path] = None, examples: int = 3, log: Log = no_log
) -> Path:
    """Write ``run_dir/report.html`` atomically: :func:`build_avss_report` for an AVSS run (its
    ``summary.json`` says subset ``avss``), :func:`cmsf.runs.report.build_report` otherwise
    (``log``: its messages)."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    try:
        subset = json.loads(summary_path.read_text(encoding="utf-8")).get("subset")
    except (OSError, ValueError, AttributeError):
        subset = None  # build_report says what is wrong with it
    if subset != "avss":
        return report.write_report(run_dir, root=root, examples=examples, log=log)
    return atomic_write_text(run_dir / "report.html", build_avss_report(run_dir, root=root, examples=examples))
