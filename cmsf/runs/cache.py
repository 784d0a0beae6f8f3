"""The candidates cache of a sweep: one compressed file per video (``cache/{video key}.npz`` in the
run folder) holding what a pipeline's model stage computed for each frame
(:class:`~cmsf.pipelines.per_frame.FrameCandidates`), at the settings it was computed with, so that any
selection those candidates cover is made again without a model.

A file is a numpy ``.npz`` archive (deflate-compressed), read with ``allow_pickle=False``::

    header        uint8, UTF-8 JSON: {"format": 1, "identity": {...}, "frame_size": [H, W],
                  "frames": T, "sources": {component: source},
                  "tags": null | {"tag_threshold": t, "frames": [[[label, p], ...], ...]},
                  "parts": [{"compute": {settings: asdict}, "counts": [K_0, ..., K_T-1],
                             "tags": [...], "phrases": [...],
                             "scoring": null | {"default_mode", "logit_scale", "logit_bias"}}, ...]}
    p{i}_boxes    float32 [ΣK, 4]   pixel (x1, y1, x2, y2), frame after frame
    p{i}_scores   float32 [ΣK]      proposal scores
    p{i}_masks    uint8 [ΣK, ⌈H·W/8⌉]  each mask flattened row-major, np.packbits (8 pixels a byte)
    p{i}_visual   float32 [ΣK, D]   binder embeddings of the proposals (BIND pipelines)
    p{i}_audio    float32 [T, D]    binder embeddings of the audio segments (BIND pipelines)

Part ``i`` is one model pass (its ``compute`` settings); a tracked pipeline's part holds its tracks
instead of per-frame candidates (:mod:`cmsf.runs.cache_tracks`: no boxes, ``"tracks"`` in its
header entry instead of ``"counts"``); ``tags`` are AT-GDINO-SAM's audio tags at
the lowest tag threshold computed, which any stricter threshold selects from. Everything is stored
exactly (float32 as computed), so a selection from the cache equals one from the models' output.
Before compression a file takes about ``T·D·4 + Σ_parts ΣK·(⌈H·W/8⌉ + 4·D + 20)`` bytes plus the
header (D = 0 without a binder); deflate shrinks the packed masks several times over.
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Optional

import numpy as np
import torch

from cmsf.io.files import atomic_write_bytes
from cmsf.pipelines.passes import PassOutput
from cmsf.pipelines.results import FrameCandidates
from cmsf.pipelines.settings import PipelineSettings
from cmsf.pipelines.tracked import VideoTracks
from cmsf.runs.cache_tracks import check_track_part, decode_tracks, is_track_part, track_arrays, track_meta
from cmsf.stages.binding import BindScoring

FORMAT = 1
"""The version of the file layout; a file of another version is ignored (recomputed)."""

Tags = list[tuple[str, float]]


@dataclass
class CachePart:
    """One model pass over a video: the settings it ran with (``compute``, the pipeline's
    settings object) and its candidates, one :class:`~cmsf.pipelines.per_frame.FrameCandidates` per frame,
    or for a tracked pipeline its ``tracks`` (``frames`` empty)."""

    compute: PipelineSettings
    frames: list[FrameCandidates]
    tracks: Optional[VideoTracks] = None

    @classmethod
    def of(cls, compute: PipelineSettings, output: PassOutput) -> CachePart:
        """The part of a pass's output (:data:`~cmsf.pipelines.passes.PassOutput`)."""
        return cls(compute, [], output) if isinstance(output, VideoTracks) else cls(compute, list(output))


@dataclass
class TagCache:
    """AT-GDINO-SAM's audio tags of each frame's segment at ``tag_threshold`` (most probable
    first, as :func:`~cmsf.pipelines.per_frame.tag_videos` gives them)."""

    tag_threshold: float
    frames: list[Tags]


@dataclass
class VideoCache:
    """Everything cached for one video. ``identity`` names what computed it (pipeline, preset,
    dtype, model sources): a file of another identity is not used. ``sources`` are the models'
    (:meth:`~cmsf.models.loading.Models.sources`), for the evidence of results selected from the cache."""

    identity: dict[str, Any]
    frame_size: tuple[int, int]
    num_frames: int
    parts: list[CachePart] = field(default_factory=list)
    tags: Optional[TagCache] = None
    sources: dict[str, str] = field(default_factory=dict)


def cache_path(cache_dir: Path, key: str) -> Path:
    """The cache file of the video whose key (``category/name`` or ``name``) is ``key``."""
    return cache_dir / f"{key}.npz"


def _part_arrays(index: int, part: CachePart, frame_size: tuple[int, int]) -> dict[str, np.ndarray]:
    frames = part.frames
    pixels = frame_size[0] * frame_size[1]
    masks = torch.cat([f.masks.reshape(-1, pixels) for f in frames] or [torch.zeros(0, pixels, dtype=torch.bool)])
    arrays = {
        f"p{index}_boxes": torch.cat([f.boxes.reshape(-1, 4) for f in frames]).to(torch.float32).numpy(),
        f"p{index}_scores": torch.cat([f.proposal_scores.reshape(-1) for f in frames]).to(torch.float32).numpy(),
        f"p{index}_masks": np.packbits(masks.numpy().astype(bool), axis=1),
    }
    if frames and frames[0].visual is not None:
        arrays[f"p{index}_visual"] = torch.cat([f.visual for f in frames]).to(torch.float32).numpy()
    if frames and frames[0].audio is not None:
        arrays[f"p{index}_audio"] = torch.stack([f.audio for f in frames]).to(torch.float32).numpy()
    return arrays


def encode_cache(cache: VideoCache) -> bytes:
    """The bytes of ``cache``'s file (see the module docstring)."""
    header: dict[str, Any] = {
        "format": FORMAT,
        "identity": cache.identity,
        "frame_size": list(cache.frame_size),
        "frames": cache.num_frames,
        "sources": cache.sources,
        "tags": None
        if cache.tags is None
        else {"tag_threshold": cache.tags.tag_threshold, "frames": [[list(t) for t in f] for f in cache.tags.frames]},
        "parts": [],
    }
    arrays: dict[str, np.ndarray] = {}
    for index, part in enumerate(cache.parts):
        if part.tracks is not None:
            header["parts"].append(
                {"compute": asdict(part.compute), **track_meta(part.tracks), "scoring": _scoring_json(part.tracks.scoring)}
            )
            arrays.update(track_arrays(index, part.tracks, cache.frame_size, cache.num_frames))
            continue
        if len(part.frames) != cache.num_frames:
            raise ValueError(f"cache part {index}: expected {cache.num_frames} frames, got {len(part.frames)}")
        header["parts"].append(
            {
                "compute": asdict(part.compute),
                "counts": [int(f.boxes.shape[0]) for f in part.frames],
                "tags": [[list(t) for t in f.tags] for f in part.frames],
                "phrases": [list(f.phrases) for f in part.frames],
                "scoring": _scoring_json(part.frames[0].scoring if part.frames else None),
            }
        )
        arrays.update(_part_arrays(index, part, cache.frame_size))
    text = json.dumps(header, allow_nan=False, ensure_ascii=False).encode("utf-8")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, header=np.frombuffer(text, dtype=np.uint8), **arrays)
    return buffer.getvalue()


def write_cache(path: Path, cache: VideoCache) -> int:
    """Write ``cache`` to ``path`` atomically (:mod:`cmsf.io.files`); returns the file's size in bytes."""
    data = encode_cache(cache)
    atomic_write_bytes(path, data)
    return len(data)


def _scoring_json(scoring: Optional[BindScoring]) -> Optional[dict[str, Any]]:
    if scoring is None:
        return None
    return {"default_mode": scoring.default_mode, "logit_scale": scoring.logit_scale, "logit_bias": scoring.logit_bias}


def _scoring(value: Optional[dict[str, Any]]) -> Optional[BindScoring]:
    if value is None:
        return None
    scale, bias = value["logit_scale"], value["logit_bias"]
    return BindScoring(
        str(value["default_mode"]), None if scale is None else float(scale), None if bias is None else float(bias)
    )


def _tags(value: Any) -> Tags:
    return [(str(label), float(p)) for label, p in value]


def _decode_part(
    index: int, meta: dict[str, Any], archive: Any, frame_size: tuple[int, int], settings: type[PipelineSettings]
) -> CachePart:
    if is_track_part(meta):
        tracks = decode_tracks(index, meta, archive, frame_size, _scoring(meta["scoring"]))
        return CachePart(compute=settings.of(meta["compute"]), frames=[], tracks=tracks)
    height, width = frame_size
    counts = [int(k) for k in meta["counts"]]
    total = sum(counts)
    boxes = torch.from_numpy(archive[f"p{index}_boxes"]).reshape(total, 4)
    scores = torch.from_numpy(archive[f"p{index}_scores"]).reshape(total)
    packed = archive[f"p{index}_masks"]
    bits = np.unpackbits(packed, axis=1, count=height * width).astype(bool)
    masks = torch.from_numpy(bits).reshape(total, height, width)
    visual = torch.from_numpy(archive[f"p{index}_visual"]) if f"p{index}_visual" in archive.files else None
    audio = torch.from_numpy(archive[f"p{index}_audio"]) if f"p{index}_audio" in archive.files else None
    scoring = _scoring(meta["scoring"])
    frames = []
    start = 0
    for t, count in enumerate(counts):
        end = start + count
        frames.append(
            FrameCandidates(
                boxes=boxes[start:end],
                proposal_scores=scores[start:end],
                masks=masks[start:end],
                visual=None if visual is None else visual[start:end],
                audio=None if audio is None else audio[t],
                scoring=scoring,
                tags=_tags(meta["tags"][t]),
                phrases=[str(p) for p in meta["phrases"][t]],
            )
        )
        start = end
    return CachePart(compute=settings.of(meta["compute"]), frames=frames)


_DTYPES = {"header": np.uint8, "boxes": np.float32, "scores": np.float32, "masks": np.uint8,
           "visual": np.float32, "audio": np.float32}  # fmt: skip
"""The dtype of each member of a cache file (``p{i}_`` removed from the name)."""

DEFLATE_RATIO = 1100
"""A member's declared size may be at most this many times its compressed size (deflate cannot
expand data more than about 1032 times): a header that claims more is damaged."""


def _read_npy_header(member: IO[bytes], name: str) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise ValueError(f"{name}: .npy version {version}")
    if fortran or dtype != np.dtype(_DTYPES[name.split("_", 1)[-1]]):
        raise ValueError(f"{name}: dtype {dtype}{' (Fortran order)' if fortran else ''}")
    return tuple(int(n) for n in shape), dtype


def member_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The shape of each member of the cache file ``path``, read from the ``.npy`` headers alone,
    every member checked before any array is allocated: a known name (``header``, ``p{i}_boxes``
    …) with its dtype, its data size (shape × item size) what the archive declares for it, and that
    no larger than the archive's compressed bytes can expand to (:data:`DEFLATE_RATIO`); so a
    damaged header claiming terabytes is refused, not allocated.

    Raises:
        ValueError, zipfile.BadZipFile, OSError: a damaged or foreign file.
    """
    size = path.stat().st_size
    shapes: dict[str, tuple[int, ...]] = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if not re.fullmatch(r"header|p\d+_(boxes|scores|masks|visual|audio)", name) or name in shapes:
                raise ValueError(f"{path}: unexpected member {info.filename!r}")
            if info.compress_size > size or info.file_size > DEFLATE_RATIO * info.compress_size + 4096:
                raise ValueError(f"{path}: {name} declares {info.file_size} bytes from {info.compress_size}")
            with archive.open(info) as member:
                shape, dtype = _read_npy_header(member, name)
                data = math.prod(shape) * dtype.itemsize
                if member.tell() + data != info.file_size:
                    raise ValueError(f"{path}: {name} of shape {shape} does not fit its {info.file_size} bytes")
            shapes[name] = shape
    return shapes


def _check_part(
    index: int, meta: dict[str, Any], shapes: dict[str, tuple[int, ...]], cache: tuple[int, int, int]
) -> None:
    """Part ``index``'s counts and member shapes agree with each other and with the header's
    ``(frames, height, width)``, before any of its arrays is read."""
    if is_track_part(meta):
        check_track_part(index, meta, shapes, cache)
        return
    frames, height, width = cache
    counts = meta["counts"]
    if len(counts) != frames or any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in counts):
        raise ValueError(f"part {index}: counts {counts!r:.80} for {frames} frames")
    total = sum(counts)
    expected = {"boxes": (total, 4), "scores": (total,), "masks": (total, -(-height * width // 8))}
    for name, shape in expected.items():
        if shapes.get(f"p{index}_{name}") != shape:
            raise ValueError(f"part {index}: {name} of shape {shapes.get(f'p{index}_{name}')}, expected {shape}")
    visual, audio = shapes.get(f"p{index}_visual"), shapes.get(f"p{index}_audio")
    if visual is not None and (len(visual) != 2 or visual[0] != total):
        raise ValueError(f"part {index}: visual of shape {visual} for {total} proposals")
    if audio is not None and (len(audio) != 2 or audio[0] != frames):
        raise ValueError(f"part {index}: audio of shape {audio} for {frames} frames")


def _tag_cache(value: Optional[dict[str, Any]]) -> Optional[TagCache]:
    if value is None:
        return None
    return TagCache(float(value["tag_threshold"]), [_tags(frame) for frame in value["frames"]])


_UNREADABLE = (
    OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile, zlib.error, RuntimeError, AttributeError
)
"""What reading a damaged cache file raises: such a file is recomputed, not an error."""


def _checked_header(
    archive: Any, identity: dict[str, Any], shapes: dict[str, tuple[int, ...]]
) -> Optional[tuple[dict[str, Any], tuple[int, int], int]]:
    """The archive's header, its ``(H, W)`` and frame count, every part's counts checked against
    the members' ``shapes`` (:func:`member_shapes`); None when it has another :data:`FORMAT` or
    another ``identity``.

    Raises:
        ValueError: a header that does not fit the file."""
    header = json.loads(bytes(archive["header"]).decode("utf-8"))
    if header.get("format") != FORMAT or header.get("identity") != identity:
        return None
    frame_size = (int(header["frame_size"][0]), int(header["frame_size"][1]))
    frames = int(header["frames"])
    if min(*frame_size, frames) < 1 or len(header["frame_size"]) != 2:
        raise ValueError(f"frame_size {frame_size}, frames {frames}")
    for i, meta in enumerate(header["parts"]):
        _check_part(i, meta, shapes, (frames, *frame_size))
    return header, frame_size, frames


def read_cache(path: Path, identity: dict[str, Any], settings: type[PipelineSettings]) -> Optional[VideoCache]:
    """The cache at ``path``, or None when there is none, it cannot be read (a damaged file is
    recomputed, not an error: its members' sizes are checked against each other and the file's
    size before anything is allocated, :func:`member_shapes`), it has another :data:`FORMAT` or
    another ``identity``. Each part's ``compute`` is read as a ``settings`` object (a part
    ``settings`` refuses makes the file unread)."""
    if not path.is_file():
        return None
    try:
        shapes = member_shapes(path)
        with np.load(path, allow_pickle=False) as archive:
            checked = _checked_header(archive, identity, shapes)
            if checked is None:
                return None
            header, frame_size, frames = checked
            parts = [_decode_part(i, meta, archive, frame_size, settings) for i, meta in enumerate(header["parts"])]
            sources = {str(k): str(v) for k, v in header["sources"].items()}
            return VideoCache(identity, frame_size, frames, parts, _tag_cache(header["tags"]), sources)
    except _UNREADABLE:
        return None


@dataclass
class CacheIndex:
    """What a cache file holds, without its candidates: each part's ``compute`` settings, in file
    order, and the cached ``tags``."""

    computed: list[PipelineSettings]
    tags: Optional[TagCache] = None


def read_cache_index(path: Path, identity: dict[str, Any], settings: type[PipelineSettings]) -> Optional[CacheIndex]:
    """The :class:`CacheIndex` of the cache at ``path`` from its header and the members' ``.npy``
    headers alone (no array is read), or None where :func:`read_cache` gives None for a missing
    file, another format or identity, or members that do not fit the header. A file whose arrays'
    compressed data is damaged has an index: :func:`read_cache` then gives None."""
    if not path.is_file():
        return None
    try:
        shapes = member_shapes(path)
        with np.load(path, allow_pickle=False) as archive:
            checked = _checked_header(archive, identity, shapes)
            if checked is None:
                return None
            parts = checked[0]["parts"]
            return CacheIndex([settings.of(meta["compute"]) for meta in parts], _tag_cache(checked[0]["tags"]))
    except _UNREADABLE:
        return None
