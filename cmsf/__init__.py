"""cmsf: training-free audio-visual segmentation by Cross-Modality Semantic Filtering.

The public API; every name is documented where it is defined::

    from cmsf import load_models, owod_bind
    models = load_models("paper")            # or "tiny" for an offline smoke run
    result = owod_bind(frames, waveform, sample_rate, models)
    result.masks                             # Tensor[T, H, W] bool
"""

from cmsf.metrics import DatasetScores, VariantTotals, VideoScores, dataset_scores, fscore, miou, score_video
from cmsf.models.imagebind import ImageBind, imagebind_audio_inputs, imagebind_vision_inputs, load_imagebind
from cmsf.models.imagebind_text import imagebind_text_inputs
from cmsf.models.loading import ModelLoadError, Models, load_models
from cmsf.ops import bind_filter, nms
from cmsf.pipelines.per_frame import at_gdino_sam, at_sam3, owod_bind, sam_bind
from cmsf.pipelines.results import FrameEvidence, SegmentationResult
from cmsf.pipelines.settings import AtGdinoSamSettings, AtSam3Settings, OwodBindSettings, PipelineSettings, SamBindSettings
from cmsf.stages.binding import Binder, binder_of, masked_crops
from cmsf.stages.concepts import ConceptMasks, segment_concepts
from cmsf.stages.grounding import Detections, ground
from cmsf.stages.proposals import Proposals, propose_boxes
from cmsf.stages.segmentation import MaskSet, sam_masks
from cmsf.stages.tagging import tag_audio

__version__ = "0.1.0"

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
    "PipelineSettings",
    "Proposals",
    "SamBindSettings",
    "SegmentationResult",
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
    "propose_boxes",
    "sam_bind",
    "sam_masks",
    "score_video",
    "segment_concepts",
    "tag_audio",
]
