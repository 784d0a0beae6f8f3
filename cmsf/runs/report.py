"""``report.html`` of a ``cmsf eval`` run (``cmsf report RUN_DIR``): one self-contained page —
pictures as JPEG data URIs, charts as inline SVG drawn here, a few lines of JavaScript to sort
tables — showing the run's settings and figures, its sweep (curves for one swept key, a heat map
for two or more), a histogram of per-video mIoU, the best and worst videos as strips of frame /
ground truth / prediction, and a sortable table of every video.

It reads what the run wrote (``summary.json``, ``per_video.csv``, ``sweep.csv``, the predicted
masks) and, for the strips, the AVSBench frames and ground truth under the run's root (or
``root``); missing pictures are said on the page, never an error.
"""

from __future__ import annotations

import base64
import html
import io
import math
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from PIL import Image

from cmsf.io import avsbench
from cmsf.io.files import atomic_write_text
from cmsf.io.media import overlay_mask, read_frames
from cmsf.metrics import VARIANTS, frame_ious
from cmsf.runs.progress import Log, no_log
from cmsf.runs.summaries import check_summary
from cmsf.runs.summaries import read_json as _read_json
from cmsf.runs.summaries import read_rows as _read_csv

THUMBNAIL = 112
"""Width in pixels of the strips' pictures."""

GT_COLOR = (40, 200, 80)
PRED_COLOR = (230, 40, 40)

VARIANT_HELP = {
    "miou_per_frame": "mean over all frames of each frame's IoU",
    "fscore_per_frame": "mean over frames with an object of each frame's best F",
    "iou_dataset": "Σ intersections / Σ unions over all frames",
    "fscore_dataset": "F-curves averaged over all frames, then the best threshold (TACO's way)",
}

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d232b;margin:0;background:#f4f6f8}
main{max-width:1120px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:30px 0 10px;border-bottom:1px solid #d8dde3;padding-bottom:4px}
.sub{color:#5b6570;margin:0 0 18px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #dde2e8;border-radius:8px;padding:10px 16px;min-width:120px}
.card b{display:block;font-size:26px;font-weight:600} .card span{color:#5b6570;font-size:12px}
.card.small b{font-size:18px}
.banner{background:#fff3cd;border:1px solid #e0b84a;border-radius:8px;padding:10px 14px;margin:14px 0}
.banner.oracle{background:#fde2e1;border-color:#d9534f}
table{border-collapse:collapse;background:#fff;font-variant-numeric:tabular-nums}
th,td{border:1px solid #dde2e8;padding:3px 9px;text-align:right} th{background:#eef1f4;font-weight:600}
td:first-child,th:first-child{text-align:left}
table.sortable th{cursor:pointer;user-select:none} table.sortable th:after{content:' \\2195';color:#9aa3ad}
table.sortable th.asc:after{content:' \\2191';color:#1d232b}
table.sortable th.desc:after{content:' \\2193';color:#1d232b}
tr.best td{background:#e6f4ea;font-weight:600}
.scroll{max-height:560px;overflow:auto;display:inline-block;border:1px solid #dde2e8}
.grid2{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
.strip{background:#fff;border:1px solid #dde2e8;border-radius:8px;padding:8px 10px;margin:0 0 12px;display:inline-block}
.strip h3{font-size:13px;margin:0 0 6px;font-weight:600}
.strip table{border:none;background:none}
.strip td{border:none;padding:1px;text-align:center;font-size:11px;color:#5b6570}
.strip td.label{text-align:right;padding-right:6px;vertical-align:middle}
.strip img{display:block;image-rendering:auto}
.note{color:#8a5a00} svg text{font:11px system-ui,sans-serif;fill:#39424c}
"""

_SCRIPT = """
function sortTable(table, column, descending) {
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const key = r => { const c = r.cells[column]; const v = c.dataset.value;
    return v === undefined ? c.textContent : (v === '' ? null : parseFloat(v)); };
  rows.sort((a, b) => { const x = key(a), y = key(b);
    if (x === null) return y === null ? 0 : 1; if (y === null) return -1;
    const c = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x).localeCompare(String(y));
    return descending ? -c : c; });
  rows.forEach(r => body.appendChild(r));
  Array.from(table.tHead.rows[0].cells).forEach((th, i) => {
    th.classList.remove('asc', 'desc'); if (i === column) th.classList.add(descending ? 'desc' : 'asc'); });
}
document.querySelectorAll('table.sortable').forEach(table => {
  Array.from(table.tHead.rows[0].cells).forEach((th, i) => th.addEventListener('click', () =>
    sortTable(table, i, th.classList.contains('asc'))));
});
const wanted = /sort=([\\w-]+?)-(asc|desc)/.exec(location.hash);
if (wanted) document.querySelectorAll('table.sortable').forEach(table => {
  const i = Array.from(table.tHead.rows[0].cells).findIndex(th => th.dataset.key === wanted[1]);
  if (i >= 0) sortTable(table, i, wanted[2] === 'desc');
});
"""


# ------------------------------------------------------------------------------ reading the run
def _number(text: Optional[str]) -> Optional[float]:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


# ------------------------------------------------------------------------------ SVG charts
def _color(fraction: float) -> str:
    """A colour from a dark-blue → teal → yellow scale (``fraction`` in [0, 1])."""
    stops = [(0.0, (38, 52, 110)), (0.5, (33, 145, 140)), (1.0, (250, 222, 70))]
    fraction = min(max(fraction, 0.0), 1.0)
    for (x0, c0), (x1, c1) in zip(stops, stops[1:]):
        if fraction <= x1:
            t = (fraction - x0) / (x1 - x0)
            return "#%02x%02x%02x" % tuple(round(a + (b - a) * t) for a, b in zip(c0, c1))
    return "#%02x%02x%02x" % stops[-1][1]


def _tag(name: str, content: Optional[str] = None, **attributes: Any) -> str:
    """An SVG or HTML element. Attribute names take ``_`` for ``-`` (a trailing ``_`` is dropped:
    ``class_``); values are escaped, floats written with one decimal; ``content`` is markup
    (escape text first), None makes an empty element ``<name …/>``."""
    parts = []
    for key, value in attributes.items():
        text = f"{value:.1f}" if isinstance(value, float) else str(value)
        parts.append(f' {key.rstrip("_").replace("_", "-")}="{html.escape(text)}"')
    opening = f"<{name}{''.join(parts)}"
    return f"{opening}/>" if content is None else f"{opening}>{content}</{name}>"


def _svg(width: int, height: int, label: str, parts: Sequence[str]) -> str:
    size = {"width": width, "height": height}
    return _tag("svg", "".join(parts), xmlns="http://www.w3.org/2000/svg", **size, role="img", aria_label=label)


def _text(x: float, y: float, text: str, anchor: str = "start", **attributes: Any) -> str:
    return _tag("text", html.escape(text), x=x, y=y, text_anchor=anchor, **attributes)


def svg_histogram(values: Sequence[float], bins: int = 20, mean: Optional[float] = None, label: str = "mIoU") -> str:
    """An SVG histogram of ``values`` in [0, 1] (``bins`` equal bins, the last one closed), with a
    dashed line at ``mean``."""
    width, height, left, bottom, top, right = 560, 240, 44, 36, 24, 16
    counts = [0] * bins
    for value in values:
        counts[min(max(int(value * bins), 0), bins - 1)] += 1
    peak = max(counts) or 1
    plot_w, plot_h = width - left - right, height - top - bottom
    base = float(top + plot_h)
    parts = []
    for tick in range(0, peak + 1, max(1, math.ceil(peak / 5))):
        y = base - tick / peak * plot_h
        parts.append(_tag("line", x1=left, x2=width - right, y1=y, y2=y, stroke="#e3e7eb"))
        parts.append(_text(left - 6, y + 4, str(tick), "end"))
    bar_w = plot_w / bins
    for i, count in enumerate(counts):
        bar_h = count / peak * plot_h
        tip = _tag("title", f"{i / bins:.2f}–{(i + 1) / bins:.2f}: {count} videos")
        bar = {"x": left + i * bar_w + 1, "y": base - bar_h, "width": bar_w - 2, "height": bar_h}
        parts.append(_tag("rect", tip, **bar, fill="#3b7dd8"))
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(_text(left + tick * plot_w, height - bottom + 16, f"{tick:g}", "middle"))
    parts.append(_tag("line", x1=left, x2=width - right, y1=base, y2=base, stroke="#39424c"))
    if mean is not None:
        x = left + mean * plot_w
        parts.append(_tag("line", x1=x, x2=x, y1=top, y2=base, stroke="#d9534f", stroke_dasharray="4 3"))
        parts.append(_text(x, top - 8, f"mean {mean:.3f}", "middle", fill="#d9534f"))
    parts.append(_text(left + plot_w / 2, height - 4, f"per-video {label} (videos per bin)", "middle"))
    return _svg(width, height, f"histogram of per-video {label}", parts)


_LINE_COLORS = ("#3b7dd8", "#e07b39", "#5aa469", "#8e6cc2", "#c44e52", "#777777")
_LINE_DASHES, _CHAR_WIDTH = ("none", "7 4", "2 3", "10 3 2 3"), 7.2  # dash per line; px per char of 12 px text


def nice_ticks(low: float, high: float, most: int = 6) -> list[float]:
    """Round ticks (multiples of 1, 2, 2.5 or 5 × 10^k, at most ``most``) from ≤ ``low`` to ≥ ``high``."""
    if not high > low:
        return [low]
    raw = (high - low) / max(most - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * (1 - 1e-9))
    first = math.floor(low / step + 1e-9)
    last = math.ceil(high / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def _tick_text(value: float, ticks: Sequence[float]) -> str:
    """``value`` with as many decimals as the ticks' step needs (0.05 → 2, 0.1 → 1)."""
    step = min((b - a for a, b in zip(ticks, ticks[1:])), default=1.0)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{value:.{decimals + (abs(round(step * 10**decimals) - step * 10**decimals) > 1e-6)}f}"  # 0.25: one more


def svg_lines(key: str, xs: Sequence[str], series: Mapping[str, Sequence[Optional[float]]], best: int) -> str:
    """An SVG line chart of each of ``series`` (name → one value per x) against the swept values
    ``xs``: placed by value when every one is a number (0.05, 0.1, 0.3 are not evenly spaced),
    evenly in grid order otherwise; round y ticks; each line its colour, width and dash pattern; a
    legend as wide as its longest label; the best setting's points are ringed."""
    names = list(series)  # a line equal to an earlier one says so: "miou_per_frame (= miou)"
    labels = [next((f"{n} (= {m})" for m in names[:i] if series[m] == series[n]), n) for i, n in enumerate(names)]
    legend_w = 48 + _CHAR_WIDTH * max((len(label) for label in labels), default=0)
    width, height, left, bottom, top, right = math.ceil(450 + legend_w), 250, 52, 40, 16, math.ceil(legend_w)
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for ys in series.values() for v in ys if v is not None]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high - low < 0.01:
        low, high = low - 0.005, high + 0.005
    y_ticks = nice_ticks(max(0.0, low), min(1.0, high)) if min(1.0, high) > max(0.0, low) else [0.0, 0.5, 1.0]
    low, high = y_ticks[0], y_ticks[-1]
    numbers = [_number(x) for x in xs]
    by_value = len(xs) > 1 and all(n is not None for n in numbers) and len(set(numbers)) == len(numbers)
    x_low, x_high = (min(numbers), max(numbers)) if by_value else (0.0, 0.0)  # type: ignore[type-var]
    def x_of(i: int) -> float:
        if by_value:
            return left + (numbers[i] - x_low) / (x_high - x_low) * plot_w  # type: ignore[operator]
        return left + (plot_w / 2 if len(xs) == 1 else i / (len(xs) - 1) * plot_w)

    def y_of(v: float) -> float:
        return top + plot_h - (v - low) / (high - low) * plot_h

    parts = []
    for v in y_ticks:
        grid = _tag("line", x1=left, x2=left + plot_w, y1=y_of(v), y2=y_of(v), stroke="#e3e7eb")
        parts += [grid, _text(left - 6, y_of(v) + 4, _tick_text(v, y_ticks), "end")]
    for i, x in enumerate(xs):  # a tick mark and the value
        tick = _tag("line", x1=x_of(i), x2=x_of(i), y1=top + plot_h, y2=top + plot_h + 4, stroke="#39424c")
        parts += [tick, _text(x_of(i), top + plot_h + 16, x, "middle")]
    for n, (name, ys) in enumerate(series.items()):
        color, dash = _LINE_COLORS[n % len(_LINE_COLORS)], _LINE_DASHES[n % len(_LINE_DASHES)]
        points = [(x_of(i), y_of(v)) for i, v in enumerate(ys) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            wide = max(1.5, 3.5 - 0.75 * n)  # the first lines wider: one drawn over an equal one shows inside it
            parts.append(_tag("polyline", points=path, fill="none", stroke=color, stroke_width=wide, stroke_dasharray=dash))
        for i, v in enumerate(ys):
            if v is None:
                continue
            ring = {"stroke": "#1d232b", "stroke_width": 2} if i == best else {}
            tip = _tag("title", html.escape(f"{name} {v:.4f}"))
            parts.append(_tag("circle", tip, cx=x_of(i), cy=y_of(v), r=5 if i == best else 3.5, fill=color, **ring))
        y = top + 8 + n * 18
        parts.append(_tag("line", x1=width - right + 12, x2=width - right + 34, y1=y, y2=y, stroke=color, stroke_width=2, stroke_dasharray=dash))
        parts.append(_text(width - right + 40, y + 4, labels[n]))
    parts.append(_text(left + plot_w / 2, height - 6, key, "middle"))
    return _svg(width, height, f"sweep of {key}", parts)


def svg_heatmap(
    row_key: str,
    column_key: str,
    row_values: Sequence[str],
    column_values: Sequence[str],
    cells: Mapping[tuple[str, str], float],
    best: Optional[tuple[str, str]],
    figure: str = "miou",
) -> str:
    """An SVG heat map of ``cells[(row value, column value)]`` (missing cells blank), the
    ``best`` cell outlined, each cell labelled with its value."""
    cell_w, cell_h, left, top = 84, 36, 130, 46
    width = max(left + cell_w * len(column_values) + 16, 470)
    height = top + cell_h * len(row_values) + 40
    values = list(cells.values())
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    parts = [_text(left + cell_w * len(column_values) / 2, 14, column_key, "middle")]
    parts.append(_text(left - 8, top - 8, f"{row_key} ↓", "end"))
    for j, column in enumerate(column_values):
        parts.append(_text(left + (j + 0.5) * cell_w, top - 8, column, "middle"))
    for i, row in enumerate(row_values):
        y = top + i * cell_h
        parts.append(_text(left - 8, y + cell_h / 2 + 4, row, "end"))
        for j, column in enumerate(column_values):
            x = left + j * cell_w
            value = cells.get((row, column))
            if value is None:
                parts.append(_tag("rect", x=x, y=y, width=cell_w, height=cell_h, fill="#f4f6f8", stroke="#fff"))
                continue
            fraction = 0.5 if high <= low else (value - low) / (high - low)
            tip = _tag("title", html.escape(f"{row_key}={row} {column_key}={column}: {figure} {value:.4f}"))
            parts.append(_tag("rect", tip, x=x, y=y, width=cell_w, height=cell_h, fill=_color(fraction), stroke="#fff"))
            shade = "fill:#1d232b" if fraction > 0.6 else "fill:#ffffff"
            parts.append(_text(x + cell_w / 2, y + cell_h / 2 + 4, f"{value:.4f}", "middle", style=shade))
            if best == (row, column):
                outline = {"fill": "none", "stroke": "#d9534f", "stroke_width": 3}
                parts.append(_tag("rect", x=x + 1.5, y=y + 1.5, width=cell_w - 3, height=cell_h - 3, **outline))
    parts.append(_text(left, height - 10, f"{figure}: {low:.4f} (dark) … {high:.4f} (light); best row outlined"))
    return _svg(width, height, f"{figure} heat map", parts)


# ------------------------------------------------------------------------------ pictures
def _data_uri(image: torch.Tensor) -> str:
    """``image (Tensor[3, H, W]) uint8`` as a JPEG data URI, :data:`THUMBNAIL` pixels wide."""
    picture = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
    height = max(1, round(picture.height * THUMBNAIL / picture.width))
    picture = picture.resize((THUMBNAIL, height), Image.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _strip(title: str, root: Path, subset: str, entry: avsbench.VideoEntry, pred_dir: Path, log: Log) -> str:
    """One video's strip: its frames, the ground truth over them (green), the prediction (red) and
    each frame's IoU; a note instead when a file is missing or unreadable (and a warning to ``log``)."""
    heading = f"<h3>{html.escape(title)}</h3>"
    try:
        gt = avsbench.load_gt_masks(root, subset, entry)
        count = gt.shape[0]
        frames = read_frames(avsbench.frame_paths(root, subset, entry)[:count])
        pred = avsbench.read_pred_masks(pred_dir, subset, entry, tuple(gt.shape[1:]), resize=True)[:count]
    except (OSError, ValueError) as error:
        log(f"warning: {entry.key}: pictures unavailable ({error}); the report shows a note instead. {_ROOT_HINT}")
        return f'<div class="strip">{heading}<p class="note">pictures unavailable: {html.escape(str(error))}</p></div>'
    ious = frame_ious(pred, gt).tolist()
    rows = {
        "frame": [_data_uri(frame) for frame in frames],
        "truth": [_data_uri(overlay_mask(frame, mask, GT_COLOR)) for frame, mask in zip(frames, gt)],
        "prediction": [_data_uri(overlay_mask(frame, mask, PRED_COLOR)) for frame, mask in zip(frames, pred)],
    }
    body = "".join(
        f'<tr><td class="label">{name}</td>'
        + "".join(_tag("td", _tag("img", src=uri, alt=f"{name} {k}", width=THUMBNAIL)) for k, uri in enumerate(uris, 1))
        + "</tr>"
        for name, uris in rows.items()
    )
    body += '<tr><td class="label">IoU</td>' + "".join(f"<td>{iou:.3f}</td>" for iou in ious) + "</tr>"
    return f'<div class="strip">{heading}<table>{body}</table></div>'


# ------------------------------------------------------------------------------ sections
def _table(
    headers: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[tuple[str, Optional[str]]]],
    *,
    css: str = "sortable",
    best: Optional[int] = None,
) -> str:
    """A table; ``headers`` are (key, label); each cell is (shown text, sort value or None for text)."""
    head = "".join(f'<th data-key="{html.escape(key)}">{html.escape(label)}</th>' for key, label in headers)
    body = []
    for index, row in enumerate(rows):
        cells = "".join(_tag("td", text, **({} if value is None else {"data_value": value})) for text, value in row)
        body.append(f'<tr class="best">{cells}</tr>' if index == best else f"<tr>{cells}</tr>")
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _figures_section(summary: Mapping[str, Any]) -> str:
    cards = [
        f'<div class="card"><b>{_fmt(summary.get("miou"))}</b><span>mIoU (AVSBench)</span></div>',
        f'<div class="card"><b>{_fmt(summary.get("fscore"))}</b><span>F-score (AVSBench, β² = 0.3)</span></div>',
    ]
    variants = summary.get("variants") or {}
    for name in VARIANTS:
        if name in variants:
            card = f"<b>{_fmt(variants[name])}</b><span>{name}</span>"
            cards.append(_tag("div", card, class_="card small", title=VARIANT_HELP[name]))
    explained = "".join(f"<li><code>{name}</code>: {html.escape(text)}</li>" for name, text in VARIANT_HELP.items())
    return f'<h2>Figures</h2><div class="cards">{"".join(cards)}</div><ul class="sub">{explained}</ul>'


def _settings_section(summary: Mapping[str, Any]) -> str:
    facts = [
        ("pipeline", summary.get("pipeline") or "(predictions scored with --pred-dir)"),
        ("preset", summary.get("preset")), ("device", summary.get("device")), ("dtype", summary.get("dtype")),
        ("subset / split", f'{str(summary.get("subset", "")).upper()} / {summary.get("split")}'),
        ("predictions", summary.get("pred_dir")), ("AVSBench root", summary.get("root")),
        ("videos computed / reused", f'{summary.get("computed")} / {summary.get("reused")}'),
        ("elapsed", f'{summary.get("elapsed_s")} s'),
    ]
    settings = summary.get("settings") or {}
    rows = [[(html.escape(str(k)), None), (_fmt(v), None)] for k, v in facts if v is not None]
    rows += [[(f"<code>{html.escape(str(k))}</code>", None), (html.escape(str(v)), None)] for k, v in settings.items()]
    return "<h2>Settings</h2>" + _table([("what", "what"), ("value", "value")], rows, css="facts")


def _sweep_section(summary: Mapping[str, Any], sweep_rows: list[dict[str, str]]) -> str:
    columns = list(sweep_rows[0])
    keys = columns[: columns.index("miou")]
    figure_names = [c for c in columns[columns.index("miou") :] if c != "best"]
    best = next((i for i, row in enumerate(sweep_rows) if row.get("best")), 0)
    info = summary.get("sweep") or {}
    parts = ["<h2>Sweep</h2>"]
    note = info.get("note")
    if note:
        parts.append(f'<div class="banner{" oracle" if info.get("test_tuned") else ""}">{html.escape(note)}</div>')
    if info.get("cache_bytes_per_video") is not None:
        passes, size = info.get("model_passes_per_video"), info["cache_bytes_per_video"] / 1024
        text = f"{len(sweep_rows)} settings from {passes} model pass(es) per video; cache {size:.1f} KiB per video."
        parts.append(_tag("p", html.escape(text), class_="sub"))
    if len(keys) == 1:
        xs = [row[keys[0]] for row in sweep_rows]
        shown = [name for name in ("miou", "fscore", "miou_per_frame", "iou_dataset") if name in columns]
        series = {name: [_number(row[name]) for row in sweep_rows] for name in shown}
        parts.append(svg_lines(keys[0], xs, series, best))
    elif len(keys) >= 2:
        row_values = list(dict.fromkeys(row[keys[0]] for row in sweep_rows))
        column_values = list(dict.fromkeys(row[keys[1]] for row in sweep_rows))
        best_cell = (sweep_rows[best][keys[0]], sweep_rows[best][keys[1]])
        if len(keys) > 2:
            parts.append(f'<p class="sub">Each cell: the best over {", ".join(keys[2:])}.</p>')
        maps = []
        for figure in ("miou", "fscore"):
            cells: dict[tuple[str, str], float] = {}
            for row in sweep_rows:
                value = _number(row[figure])
                cell = (row[keys[0]], row[keys[1]])
                if value is not None and (cell not in cells or value > cells[cell]):
                    cells[cell] = value
            maps.append(svg_heatmap(keys[0], keys[1], row_values, column_values, cells, best_cell, figure))
        parts.append('<div class="grid2">' + "".join(maps) + "</div>")
    headers = [(k, k) for k in keys] + [(n, n) for n in figure_names]
    rows = [
        [(html.escape(row[k]), row[k] if _number(row[k]) is not None else None) for k in keys]
        + [(_fmt(_number(row[n])), row[n]) for n in figure_names]
        for row in sweep_rows
    ]
    parts.append('<div class="scroll">' + _table(headers, rows, best=best) + "</div>")
    return "".join(parts)


def row_names(rows: list[dict[str, str]]) -> list[str]:
    """The column names of csv ``rows``."""
    return list(rows[0]) if rows else []


def _video_table(rows: list[dict[str, str]]) -> str:
    names = row_names(rows)
    text_columns = [c for c in ("video", "category") if c in names]
    figure_columns = [c for c in names if c not in text_columns]
    headers = [(c, c) for c in text_columns + figure_columns]
    cells = [
        [(html.escape(row[c]), None) for c in text_columns] + [(_fmt(_number(row[c])), row[c]) for c in figure_columns]
        for row in rows
    ]
    return '<div class="scroll">' + _table(headers, cells) + "</div>"


_ROOT_HINT = "If the AVSBench folder or the run moved, pass --root (cmsf report RUN_DIR --root AVSBench)."


def _strips_section(
    summary: Mapping[str, Any], rows: list[dict[str, str]], run_dir: Path, root: Optional[Path], examples: int, log: Log
) -> str:
    subset = str(summary.get("subset", "s4"))
    split = str(summary.get("split", "test"))
    data_root = Path(root) if root is not None else Path(str(summary.get("root", "")))
    pred_dir = run_dir / "pred_masks" if summary.get("pipeline") else Path(str(summary.get("pred_dir", "")))
    scored = sorted((r for r in rows if _number(r.get("miou")) is not None), key=lambda r: -float(r["miou"]))
    each = min(examples, max(1, len(scored) // 2))  # a short run: half best, half worst
    best = scored[:each]
    worst = scored[each:][::-1][:each]
    intro = (
        "Each strip: the frames, the ground truth (green) and the prediction (red) over them, and each "
        f"frame's IoU. Frames from {data_root}."
    )
    parts = ["<h2>Best and worst videos</h2>" + _tag("p", html.escape(intro), class_="sub")]
    if not data_root.is_dir():
        missing = f"The AVSBench folder {data_root} is not here: pass --root to show the videos."
        log(f"warning: the AVSBench folder {data_root} is not here, so the report shows no frames. {_ROOT_HINT}")
        return parts[0] + _tag("p", html.escape(missing), class_="note")
    for label, chosen in (("best", best), ("worst", worst)):
        for row in chosen:
            entry = avsbench.VideoEntry(row["video"], split, row.get("category") or None)
            title = f'{label}: {entry.key} — mIoU {float(row["miou"]):.4f}, F {_fmt(_number(row.get("fscore")))}'
            parts.append(_strip(title, data_root, subset, entry, pred_dir, log))
    return "".join(parts)


def build_report(run_dir: Path, *, root: Optional[Path] = None, examples: int = 3, log: Log = no_log) -> str:
    """The HTML text of ``run_dir``'s report (see the module docstring).

    Args:
        run_dir: a folder written by ``cmsf eval`` (``summary.json``, ``per_video.csv``, …).
        root: the AVSBench folder for the strips (default: the one the run recorded).
        examples: how many best and how many worst videos get a strip.
        log: gets a warning (one line, with the ``--root`` hint) when the AVSBench folder is not
            there or a strip's pictures cannot be read; the page says so too.

    Raises:
        FileNotFoundError: ``summary.json`` or ``per_video.csv`` missing.
        ValueError: one of them unreadable (not UTF-8, not JSON / CSV), or a ``summary.json``
            field of the wrong type (:func:`check_summary`); the message names the file (and
            the field).
    """
    run_dir = Path(run_dir)
    summary = check_summary(run_dir / "summary.json", _read_json(run_dir / "summary.json"))
    rows = _read_csv(run_dir / "per_video.csv", ("video", "miou", "fscore"))
    sweep_path = run_dir / "sweep.csv"
    sweep_rows = _read_csv(sweep_path, ("miou", "fscore")) if sweep_path.is_file() else []
    what = summary.get("pipeline") or "predictions"
    title = f'{what} on AVSBench {str(summary.get("subset", "")).upper()} {summary.get("split", "")}'
    ious = [v for v in (_number(r.get("miou")) for r in rows) if v is not None]
    parts = [
        f"<main><h1>{html.escape(title)}</h1>",
        _tag("p", html.escape(f"{len(rows)} video{'' if len(rows) == 1 else 's'} · cmsf report of {run_dir}"), class_="sub"),
        _figures_section(summary),
    ]
    if sweep_rows:
        parts.append(_sweep_section(summary, sweep_rows))
    parts.append('<div class="grid2"><div>' + _settings_section(summary) + "</div><div><h2>Per-video mIoU</h2>")
    parts.append(svg_histogram(ious, mean=_number(str(summary.get("miou")))) + "</div></div>")
    parts.append(_strips_section(summary, rows, run_dir, root, examples, log))
    parts.append(f'<h2>Videos ({len(rows)})</h2><p class="sub">Click a column to sort.</p>{_video_table(rows)}</main>')
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)} — cmsf report</title><style>{_STYLE}</style></head><body>"
        + "".join(parts)
        + f"<script>{_SCRIPT}</script></body></html>\n"
    )


def write_report(run_dir: Path, *, root: Optional[Path] = None, examples: int = 3, log: Log = no_log) -> Path:
    """Write ``run_dir/report.html`` (:func:`build_report`, which see) atomically; returns its path."""
    run_dir = Path(run_dir)
    text = build_report(run_dir, root=root, examples=examples, log=log)
    return atomic_write_text(run_dir / "report.html", text)


BROWSER_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip
"""Flags of a headless Chromium that renders a local file and talks to no network service."""


def find_browser() -> Optional[str]:
    """The path of a Chromium (``chromium``, ``chromium-browser``, ``google-chrome``) on PATH, or None."""
    found = (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome"))
    return next((path for path in found if path), None)


def render_in_browser(
    page: Path,
    *,
    screenshot: Optional[Path] = None,
    size: tuple[int, int] = (1200, 2000),
    fragment: str = "",
    timeout: float = 120.0,
) -> str:
    """Open ``page`` (a local HTML file) in headless Chromium, with a fresh profile, and return
    the DOM after its scripts ran (``--dump-dom``); with ``screenshot``, also save a PNG of the
    first ``size`` = (width, height) CSS pixels there. ``fragment`` is appended to the URL
    (e.g. ``"#sort=miou-asc"``). For looking at a report by eye and for tests.

    Raises:
        FileNotFoundError: no Chromium on PATH (Debian: ``apt-get install chromium``).
        OSError: the browser failed (its stderr in the message).
    """
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError("chromium: not found on PATH (Debian: apt-get install chromium)")
    url = Path(page).resolve().as_uri() + fragment
    outputs = []
    with tempfile.TemporaryDirectory() as profile:
        commands = [["--dump-dom"]]
        if screenshot is not None:
            window = f"--window-size={size[0]},{size[1]}"
            commands.append([f"--screenshot={Path(screenshot).resolve()}", window, "--hide-scrollbars"])
        for extra in commands:
            done = subprocess.run(
                [browser, *BROWSER_FLAGS, f"--user-data-dir={profile}", *extra, url],
                capture_output=True, text=True, timeout=timeout, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                raise OSError(f"{browser} failed on {page} (exit {done.returncode}): {done.stderr[-2000:]}")
            outputs.append(done.stdout)
    return outputs[0]
