"""FLOPs of the pipelines' model work, counted with ``torch.utils.flop_counter.FlopCounterMode``
on models built on the meta device (no weights in memory, no computation: the paper's
architectures are counted in seconds on any machine).

Usage::

    python -m bench.flops --out bench/results/flops.json

Each *unit* is one call of a model as the stages make it, with the input shapes the stages'
processors produce (SAM 1024², OWLv2 960², ImageBind 224² crops and 3 log-mel clips per audio
segment, AST 1024 frames): a unit linear in its batch is counted at 1 and 2 items, giving
``per_item`` and ``per_call`` (the part that does not grow with the batch, e.g. SAM's dense
positional embedding per decoder call). :func:`video_flops` adds the units up for one video from
the counts of a run (frames, boxes, crops, points), which is how the pipeline benchmarks turn
their time per video into achieved TFLOP/s and ``fraction_of_peak``.

FlopCounterMode counts matrix multiplications, convolutions and attention (2 FLOPs per
multiply-add); resizing, normalisation, NMS and mask post-processing are not counted.
GroundingDINO (AT-GDINO-SAM) is not counted: its text masks are built from the token ids, which
the meta device does not have.

The tracker of the tracked pipelines (SAM 2.1's video model) is counted by :func:`tracker_flops`
through the calls :func:`cmsf.stages.tracking.track_masks` makes: ``image_encoder_per_frame`` (each
frame is encoded once per video) and ``per_object_frame`` (memory attention, mask decoder and
memory encoder, for each tracked object in each frame).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import transformers
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from cmsf.models.imagebind import IMAGE_SIZE, ImageBind
from cmsf.models.random_families import family_config, family_processor
from cmsf.models.random_models import HUGE_IMAGEBIND_SIZES, TINY_IMAGEBIND_SIZES, random_config

PRESET_SIZES = {"tiny": "tiny", "paper-random": "paper"}
TRACKER_SIZES = {"tiny": "tiny", "paper-random": "full"}  # the tracker's random config in each preset
AVSBENCH_FRAMES = 5
POINTS_PER_BATCH = 64  # cmsf.stages.segmentation.sam_masks' default
UNITS = ("owlv2_frame", "sam_image", "sam_box_decoder", "sam_point_decoder", "imagebind_crop", "imagebind_segment", "ast_segment")


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs ``FlopCounterMode`` counts while ``fn()`` runs (under ``torch.no_grad``)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _linear(make_call: Callable[[int], Callable[[], Any]]) -> dict[str, int]:
    """``per_call`` and ``per_item`` of a unit counted at 1 and 2 items."""
    one, two = count_flops(make_call(1)), count_flops(make_call(2))
    return {"per_call": 2 * one - two, "per_item": two - one}


def build_on_meta(preset: str) -> dict[str, Any]:
    """The preset's OWLv2, SAM, AST and ImageBind, built on the meta device, in eval mode."""
    size = PRESET_SIZES[preset]
    with torch.device("meta"):
        models = {
            "owlv2": transformers.Owlv2ForObjectDetection(random_config("owlv2", size)),
            "sam": transformers.SamModel(random_config("sam", size)),
            "ast": transformers.ASTForAudioClassification(random_config("ast", size)),
            "imagebind": ImageBind(**(TINY_IMAGEBIND_SIZES if preset == "tiny" else HUGE_IMAGEBIND_SIZES)),
        }
    return {name: model.eval().requires_grad_(False) for name, model in models.items()}


def unit_flops(models: dict[str, Any], device: str = "meta") -> dict[str, dict[str, int]]:
    """Every unit's ``per_call`` / ``per_item`` FLOPs (see the module docstring).

    ``device`` is where the inputs are made: ``"meta"`` for models built on it, the models'
    device otherwise (the tests count the tiny preset both ways)."""
    owl, sam, ast, imagebind = models["owlv2"], models["sam"], models["ast"], models["imagebind"]
    owl_side = owl.config.vision_config.image_size
    sam_side = sam.config.vision_config.image_size
    sam_grid = sam.config.prompt_encoder_config.image_embedding_size
    channels = sam.config.vision_config.output_channels

    def zeros(*shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.zeros(*shape, device=device, dtype=dtype)

    def owl_call(n: int) -> Callable[[], Any]:
        def run() -> None:
            feature_map, _ = owl.image_embedder(pixel_values=zeros(n, 3, owl_side, owl_side))
            features = feature_map.reshape(feature_map.shape[0], -1, feature_map.shape[-1])
            owl.objectness_predictor(features)
            owl.box_predictor(features, feature_map)

        return run

    embedding = zeros(1, channels, sam_grid, sam_grid)
    audio_shape = imagebind.audio_input_shape
    return {
        "owlv2_frame": _linear(owl_call),
        "sam_image": _linear(lambda n: lambda: sam.get_image_embeddings(zeros(n, 3, sam_side, sam_side))),
        "sam_box_decoder": _linear(
            lambda n: lambda: sam(image_embeddings=embedding, input_boxes=zeros(1, n, 4), multimask_output=False)
        ),
        "sam_point_decoder": _linear(
            lambda n: lambda: sam(
                image_embeddings=embedding, input_points=zeros(1, n, 1, 2),
                input_labels=zeros(1, n, 1, dtype=torch.long), multimask_output=True,
            )  # fmt: skip
        ),
        "imagebind_crop": _linear(lambda n: lambda: imagebind.embed_vision(zeros(n, 3, IMAGE_SIZE, IMAGE_SIZE))),
        "imagebind_segment": _linear(lambda n: lambda: imagebind.embed_audio(zeros(n, 3, *audio_shape))),
        "ast_segment": _linear(
            lambda n: lambda: ast(input_values=zeros(n, ast.config.max_length, ast.config.num_mel_bins))
        ),
    }


def video_flops(
    units: dict[str, dict[str, int]],
    pipeline: str,
    *,
    frames: int,
    proposals_per_frame: Sequence[int],
    points_per_side: Optional[int] = None,
) -> int:
    """FLOPs of one video's model work in ``pipeline`` (``"owod-bind"`` or ``"sam-bind"``).

    Args:
        units: from :func:`unit_flops` (or the JSON's ``units``).
        frames: T; the audio gives T segments.
        proposals_per_frame: the boxes (OWOD-BIND: OWLv2 proposals prompting SAM) or automatic
            masks kept after NMS (SAM-BIND) of each frame, each one a crop for ImageBind.
        points_per_side: SAM-BIND's point grid (its decoder runs on ``points_per_side²`` points
            per frame, :data:`POINTS_PER_BATCH` per call).
    """

    def cost(unit: str, calls: int, items: int) -> int:
        return calls * units[unit]["per_call"] + items * units[unit]["per_item"]

    crops = sum(proposals_per_frame)
    shared = cost("sam_image", 1, frames) + cost("imagebind_crop", 1 if crops else 0, crops)
    shared += cost("imagebind_segment", 1, frames)
    if pipeline == "owod-bind":
        prompted = sum(1 for count in proposals_per_frame if count)
        return shared + cost("owlv2_frame", 1, frames) + cost("sam_box_decoder", prompted, crops)
    if pipeline == "sam-bind":
        if points_per_side is None:
            raise ValueError("points_per_side: needed for sam-bind")
        points = points_per_side**2
        return shared + cost("sam_point_decoder", frames * math.ceil(points / POINTS_PER_BATCH), frames * points)
    raise ValueError(f"pipeline: expected owod-bind or sam-bind, got {pipeline!r}")


def report(presets: Sequence[str] = ("paper-random", "tiny")) -> dict[str, Any]:
    """The JSON written by ``python -m bench.flops``: units per preset and example video totals."""
    out: dict[str, Any] = {
        "command": "python -m bench.flops --out bench/results/flops.json",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "counter": "torch.utils.flop_counter.FlopCounterMode on the meta device; 2 FLOPs per multiply-add; "
        "matmul, convolution and attention only",
        "presets": {},
    }
    for preset in presets:
        units = unit_flops(build_on_meta(preset))
        videos = {}
        for per_frame in (8, 10):  # the benchmark workload (≈ 8 proposals per frame) and ≈ 50 crops per video
            videos[f"owod-bind, {per_frame} proposals per frame"] = video_flops(
                units, "owod-bind", frames=AVSBENCH_FRAMES, proposals_per_frame=[per_frame] * AVSBENCH_FRAMES
            )
            videos[f"sam-bind, 32x32 points, {per_frame} masks per frame"] = video_flops(
                units, "sam-bind", frames=AVSBENCH_FRAMES, proposals_per_frame=[per_frame] * AVSBENCH_FRAMES,
                points_per_side=32,
            )  # fmt: skip
        out["presets"][preset] = {
            "units": units,
            "tracker": tracker_flops(preset),
            "avsbench_video": {"frames": AVSBENCH_FRAMES, "frame_size": [224, 224], "audio_seconds": 5.0},
            "video_flops": videos,
        }
    return out


def tracker_flops(preset: str, frames: int = AVSBENCH_FRAMES, side: int = 224) -> dict[str, int]:
    """FLOPs of the preset's tracker (built on the meta device) as
    :func:`cmsf.stages.tracking.track_masks` runs it on a ``frames``-frame video of ``side``² pixels:
    one session caching every frame, objects prompted with a mask on the middle frame, propagated
    forward then in reverse. Counted with 1 and 2 objects: ``per_object_frame`` is what one more
    object costs per frame, ``image_encoder_per_frame`` one frame's image encoding (counted
    alone), ``per_frame_one_object`` the whole tracking of one object divided by ``frames``."""
    config = family_config("tracker", "sam2_video", TRACKER_SIZES[preset])
    with torch.device("meta"):
        model = transformers.Sam2VideoModel(config).eval()
    processor = family_processor("tracker", "sam2_video", TRACKER_SIZES[preset], config)
    video = torch.zeros(frames, 3, side, side, dtype=torch.uint8)
    mask = torch.zeros(side, side, dtype=torch.bool)
    mask[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = True
    seed = frames // 2

    def track(objects: int) -> Callable[[], Any]:
        def run() -> None:
            session = processor.init_video_session(
                video=video, inference_device="meta", processing_device="cpu", max_vision_features_cache_size=frames
            )
            processor.add_inputs_to_inference_session(
                inference_session=session, frame_idx=seed, obj_ids=list(range(objects)), input_masks=[mask] * objects
            )
            model(inference_session=session, frame_idx=seed)
            for reverse in (False, True):
                for _ in model.propagate_in_video_iterator(session, start_frame_idx=seed, reverse=reverse):
                    pass

        return run

    one, two = count_flops(track(1)), count_flops(track(2))
    pixels = torch.zeros(1, 3, config.image_size, config.image_size, device="meta")
    return {
        "frames": frames,
        "image_encoder_per_frame": count_flops(lambda: model.get_image_features(pixels)),
        "per_object_frame": (two - one) // frames,
        "per_frame_one_object": one // frames,
    }


FLOPS_JSON = Path(__file__).resolve().parent / "results" / "flops.json"
"""The committed counts (``python -m bench.flops --out bench/results/flops.json``)."""


def pipeline_units(preset: str, path: Path = FLOPS_JSON) -> dict[str, dict[str, int]]:
    """The units of ``preset`` from the committed JSON; counted now (on the meta device, a few
    seconds) if the JSON lacks them."""
    if path.is_file():
        units = json.loads(path.read_text(encoding="utf-8")).get("presets", {}).get(preset, {}).get("units")
        if units:
            return units
    return unit_flops(build_on_meta(preset))


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here (default: print it)")
    args = parser.parse_args(argv)
    text = json.dumps(report(), indent=2) + "\n"
    if args.out is None:
        print(text, end="")
    else:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
