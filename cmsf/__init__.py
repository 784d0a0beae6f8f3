"""cmsf: training-free audio-visual segmentation by Cross-Modality Semantic Filtering.

The public API; every name is documented where it is defined::

    from cmsf import load_models, owod_bind
    models = load_models("paper")            # or "tiny" for an offline smoke run
    result = owod_bind(frames, waveform, sample_rate, models)
    result.masks                             # Tensor[T, H, W] bool

The names are imported lazily, as transformers' own ``__init__`` does: ``import cmsf`` imports
no submodule (so no torch), and the first use of a name (``cmsf.owod_bind``, ``from cmsf import
owod_bind``) imports the submodule that defines it (:data:`_NAMES` maps each submodule to its
names). ``__all__`` and ``dir(cmsf)`` list every name; type checkers and IDEs see them through
the ``TYPE_CHECKING`` imports below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_NAMES: dict[str, tuple[str, ...]] = {
    "cmsf.metrics": (
        "DatasetScores",
        "VariantTotals",
        "VideoScores",
        "dataset_scores",
        "fscore",
        "miou",
        "score_video",
    ),
    "cmsf.models.imagebind": ("ImageBind", "imagebind_audio_inputs", "imagebind_vision_inputs", "load_imagebind"),
    "cmsf.models.imagebind_text": ("imagebind_text_inputs",),
    "cmsf.models.loading": ("ModelLoadError", "Models", "load_models"),
    "cmsf.ops": ("bind_filter", "nms"),
    "cmsf.pipelines.per_frame": ("at_gdino_sam", "at_sam3", "owod_bind", "sam_bind"),
    "cmsf.pipelines.results": ("FrameEvidence", "SegmentationResult", "TrackEvidence"),
    "cmsf.pipelines.settings": (
        "AtGdinoSamSettings",
        "AtSam3Settings",
        "OwodBindSettings",
        "OwodBindTrackedSettings",
        "PipelineSettings",
        "SamBindSettings",
        "SamBindTrackedSettings",
    ),
    "cmsf.pipelines.tracked": ("owod_bind_tracked", "sam_bind_tracked"),
    "cmsf.runs.outputs": ("save_segmentation",),
    "cmsf.semantic_metrics": ("SemanticTotals",),
    "cmsf.stages.binding": ("Binder", "binder_of", "masked_crops"),
    "cmsf.stages.concepts": ("ConceptMasks", "segment_concepts"),
    "cmsf.stages.grounding": ("Detections", "ground"),
    "cmsf.stages.proposals": ("Proposals", "propose_boxes"),
    "cmsf.stages.segmentation": ("MaskSet", "sam_masks"),
    "cmsf.stages.tagging": ("tag_audio",),
    "cmsf.stages.tracking": ("TrackedMasks", "track_masks"),
}
"""The public names by the submodule that defines them (``__all__`` lists the same names)."""

_MODULE_OF = {name: module for module, names in _NAMES.items() for name in names}

__all__ = [
    "AtGdinoSamSettings",
    "AtSam3Settings",
    "Binder",
    "ConceptMasks",
    "DatasetScores",
    "Detections",
    "FrameEvidence",
    "ImageBind",
    "MaskSet",
    "ModelLoadError",
    "Models",
    "OwodBindSettings",
    "OwodBindTrackedSettings",
    "PipelineSettings",
    "Proposals",
    "SamBindSettings",
    "SamBindTrackedSettings",
    "SegmentationResult",
    "SemanticTotals",
    "TrackEvidence",
    "TrackedMasks",
    "VariantTotals",
    "VideoScores",
    "at_gdino_sam",
    "at_sam3",
    "bind_filter",
    "binder_of",
    "dataset_scores",
    "fscore",
    "ground",
    "imagebind_audio_inputs",
    "imagebind_text_inputs",
    "imagebind_vision_inputs",
    "load_imagebind",
    "load_models",
    "masked_crops",
    "miou",
    "nms",
    "owod_bind",
    "owod_bind_tracked",
    "propose_boxes",
    "sam_bind",
    "sam_bind_tracked",
    "save_segmentation",
    "sam_masks",
    "score_video",
    "segment_concepts",
    "tag_audio",
    "track_masks",
]

if TYPE_CHECKING:
    from cmsf.metrics import DatasetScores, VariantTotals, VideoScores, dataset_scores, fscore, miou, score_video
    from cmsf.models.imagebind import ImageBind, imagebind_audio_inputs, imagebind_vision_inputs, load_imagebind
    from cmsf.models.imagebind_text import imagebind_text_inputs
    from cmsf.models.loading import ModelLoadError, Models, load_models
    from cmsf.ops import bind_filter, nms
    from cmsf.pipelines.per_frame import at_gdino_sam, at_sam3, owod_bind, sam_bind
    from cmsf.pipelines.results import FrameEvidence, SegmentationResult, TrackEvidence
    from cmsf.pipelines.settings import (
        AtGdinoSamSettings,
        AtSam3Settings,
        OwodBindSettings,
        OwodBindTrackedSettings,
        PipelineSettings,
        SamBindSettings,
        SamBindTrackedSettings,
    )
    from cmsf.pipelines.tracked import owod_bind_tracked, sam_bind_tracked
    from cmsf.runs.outputs import save_segmentation
    from cmsf.semantic_metrics import SemanticTotals
    from cmsf.stages.binding import Binder, binder_of, masked_crops
    from cmsf.stages.concepts import ConceptMasks, segment_concepts
    from cmsf.stages.grounding import Detections, ground
    from cmsf.stages.proposals import Proposals, propose_boxes
    from cmsf.stages.segmentation import MaskSet, sam_masks
    from cmsf.stages.tagging import tag_audio
    from cmsf.stages.tracking import TrackedMasks, track_masks


def __getattr__(name: str) -> Any:
    """A public name, imported from its submodule on first use (then kept in this module)."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'cmsf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """This module's attributes and every public name, imported or not."""
    return sorted(set(globals()) | set(__all__))
