"""One table of model families: for each component (the segmenter ``sam``, the grounding model
``grounding_dino``, the binder, the concept segmenter ``sam3``, the audio tagger ``ast``, the
proposer ``owlv2`` and the video ``tracker``), every family it accepts as one :class:`Family`.

An entry says which config ``model_type``\\ s the family loads (the hub ships SAM 2.1, EdgeTAM and
SAM 3 as video checkpoints, ``sam2_video`` / ``edgetam_video`` / ``sam3_video``, which load into
the image classes), its model and processor classes in ``transformers``, how the stages run it
where families differ (:class:`SegmenterRecipe`, :class:`PhraseTokens`, :class:`BinderRecipe`),
and its seeded-random configs (:class:`RandomBuild`). Loading (:mod:`cmsf.models.loading`), the
stages and the random builders read it; adding a family is adding an entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import transformers
from torch import nn

from cmsf.models import random_configs as configs
from cmsf.models.random_configs import ConfigSpec

__all__ = [
    "BERT_PHRASE_TOKENS",
    "COMPONENT_TITLES",
    "FAMILY_TABLE",
    "BinderRecipe",
    "Family",
    "PhraseTokens",
    "RandomBuild",
    "SegmenterRecipe",
    "accepted_names",
    "accepted_types",
    "default_family",
    "families_of",
    "family_named",
    "family_of",
    "load_processor",
    "loaded_family",
]


COMPONENT_TITLES = {
    "ast": "AST audio tagger",
    "grounding_dino": "GroundingDINO detector",
    "sam": "SAM segmenter",
    "owlv2": "OWLv2 proposer",
    "imagebind": "ImageBind",
    "sam3": "SAM 3 concept segmenter",
    "binder": "audio-visual binder",
    "mavl": "MAVL proposer",
    "tracker": "video tracker",
}
"""Each component in words, for messages."""


@dataclass(frozen=True)
class SegmenterRecipe:
    """How :func:`cmsf.stages.segmentation.sam_masks` runs a SAM-family segmenter, as its own
    processor and transformers documentation run it.

    Attributes:
        square_input: the image processor resizes the image to the square model input (SAM 2,
            EdgeTAM): prompts scale per axis (float32, ``side / W`` and ``side / H``) and
            ``post_process_masks`` upsamples straight to the image. False (SAM, SAM-HQ): the
            longest side is resized and the rest padded: prompts scale by resized / original,
            ``post_process_masks`` also takes the resized size (upsample to the padded input,
            crop, upsample to the image).
        box_dtype: the dtype box prompts are scaled in without a square input (points: float64):
            SAM-HQ's processor scales in float64 and hands float64 to the model; SAM's float32
            keeps earlier cmsf releases bit-identical (SamProcessor's float64 differs by at most
            one float32 ulp of a coordinate).
        embeddings: what ``get_image_embeddings`` returns, in order: the decoder argument each
            part goes to, and whether that part is a list of feature levels (SAM 2) or one
            batch tensor (SAM). One part: the output itself.
        encoder_fits_memory: the images per forward of the image encoder are as many as fit the
            free CUDA memory (SAM, SAM-HQ: a ViT with global attention,
            :func:`cmsf.models.memory.sam_encoder_bytes_per_image`); else a fixed chunk.
    """

    square_input: bool
    box_dtype: torch.dtype = torch.float64
    embeddings: tuple[tuple[str, bool], ...] = (("image_embeddings", False),)
    encoder_fits_memory: bool = False


@dataclass(frozen=True)
class PhraseTokens:
    """The token ids at which a grounding model splits its prompt into phrases (transformers'
    GroundingDINO ``SPECIAL_TOKENS``: BERT-uncased's [CLS], [SEP], "." and "?"), and padding."""

    cls: int
    sep: int
    pad: int
    delimiters: tuple[int, ...]


BERT_PHRASE_TOKENS = PhraseTokens(cls=101, sep=102, pad=0, delimiters=(1012, 1029))
"""GroundingDINO's and MM-GroundingDINO's phrase tokens (BERT-uncased ids)."""


@dataclass(frozen=True)
class BinderRecipe:
    """How the BIND step reads a binder: ``bind_mode`` its own mode (``"softmax"`` over the
    proposals, or ``"calibrated"``), ``calibrated`` whether it has a calibrated match logit."""

    bind_mode: str
    calibrated: bool


@dataclass(frozen=True)
class RandomBuild:
    """A family with seeded random weights, built in code (no download).

    Attributes:
        tiny, full: the configs (CPU tests; the architecture of ``checkpoint``).
        processor: ``(config, tiny) → processor``, built to match the config.
        checkpoint: the published checkpoint whose architecture ``full`` reproduces.
        soften: applied to every random model of the family (e.g. PE-AV's zero logit scale).
        soften_tiny: applied to the tiny model only (tiny OWLv2 saturates).
    """

    tiny: ConfigSpec
    full: ConfigSpec
    processor: Callable[[transformers.PretrainedConfig, bool], Any]
    checkpoint: str
    soften: Optional[Callable[[nn.Module], None]] = None
    soften_tiny: Optional[Callable[[nn.Module], None]] = None

    def config(self, size: str) -> transformers.PretrainedConfig:
        """The config of ``size``: ``"tiny"``, or the full architecture (``"paper"``/``"full"``)."""
        return (self.tiny if size == "tiny" else self.full).build()


@dataclass(frozen=True)
class Family:
    """One family a component accepts.

    Attributes:
        component: the :class:`cmsf.models.loading.Models` component (``"sam"``, ``"binder"``, …).
        name: the family's own config ``model_type`` (what :meth:`Models.family` says).
        model_types: the config ``model_type``\\ s loaded as this family (its own first; the hub's
            video checkpoints of an image family load into the image classes).
        model_class: its model class in ``transformers``; None for a model that is not one
            (ImageBind: the binder is then the ``imagebind`` component).
        processor: its processor class in ``transformers``, loaded with ``from_pretrained``, or
            with ``processor_parts`` built from its parts: ``(argument, class)`` pairs, each part
            loaded with ``from_pretrained`` from the same source.
        title: the family in words.
        segmenter, phrase_tokens, binder: how the stages run it, where families differ.
        random: its seeded-random configs; None where cmsf builds none.
    """

    component: str
    name: str
    model_types: tuple[str, ...]
    model_class: Optional[str]
    processor: Optional[str]
    title: str
    processor_parts: tuple[tuple[str, str], ...] = ()
    segmenter: Optional[SegmenterRecipe] = None
    phrase_tokens: Optional[PhraseTokens] = None
    binder: Optional[BinderRecipe] = None
    random: Optional[RandomBuild] = None


def _sam_like(name: str, types: tuple[str, ...], model: str, processor: str, title: str, **fields: Any) -> Family:
    return Family("sam", name, types, model, processor, title, **fields)


_GROUNDING_PARTS = (("image_processor", "GroundingDinoImageProcessor"), ("tokenizer", "AutoTokenizer"))
_SAM2_LIKE = SegmenterRecipe(square_input=True, embeddings=(("image_embeddings", True),))

FAMILY_TABLE: tuple[Family, ...] = (
    Family(
        "ast", "audio-spectrogram-transformer", ("audio-spectrogram-transformer",), "ASTForAudioClassification",
        "ASTFeatureExtractor", "AST",
        random=RandomBuild(
            configs.AST_TINY, configs.AST_FULL, configs.ast_processor, "MIT/ast-finetuned-audioset-10-10-0.4593"
        ),
    ),
    Family(
        "grounding_dino", "grounding-dino", ("grounding-dino",), "GroundingDinoForObjectDetection",
        "GroundingDinoProcessor", "GroundingDINO", processor_parts=_GROUNDING_PARTS, phrase_tokens=BERT_PHRASE_TOKENS,
        random=RandomBuild(
            configs.GROUNDING_DINO_TINY, configs.GROUNDING_DINO_SWIN_T, configs.grounding_processor,
            "IDEA-Research/grounding-dino-tiny",
        ),
    ),
    Family(
        "grounding_dino", "mm-grounding-dino", ("mm-grounding-dino",), "MMGroundingDinoForObjectDetection",
        "GroundingDinoProcessor", "MM-GroundingDINO", processor_parts=_GROUNDING_PARTS,
        phrase_tokens=BERT_PHRASE_TOKENS,
        random=RandomBuild(
            configs.MM_GROUNDING_DINO_TINY, configs.MM_GROUNDING_DINO_LARGE, configs.grounding_processor,
            "openmmlab-community/mm_grounding_dino_large_all",
        ),
    ),
    _sam_like(
        "sam", ("sam",), "SamModel", "SamImageProcessor", "SAM",
        segmenter=SegmenterRecipe(square_input=False, box_dtype=torch.float32, encoder_fits_memory=True),
        random=RandomBuild(configs.SAM_TINY, configs.SAM_HUGE, configs.sam_processor, "facebook/sam-vit-huge"),
    ),
    _sam_like(
        "sam_hq", ("sam_hq",), "SamHQModel", "SamImageProcessor", "SAM-HQ",
        segmenter=SegmenterRecipe(
            square_input=False,
            embeddings=(("image_embeddings", False), ("intermediate_embeddings", True)),
            encoder_fits_memory=True,
        ),
        random=RandomBuild(
            configs.SAM_HQ_TINY, configs.SAM_HQ_HUGE, configs.sam_processor, "syscv-community/sam-hq-vit-huge"
        ),
    ),
    _sam_like(
        "sam2", ("sam2", "sam2_video"), "Sam2Model", "Sam2ImageProcessor", "SAM 2 / 2.1", segmenter=_SAM2_LIKE,
        random=RandomBuild(
            configs.SAM2_TINY, configs.SAM2_LARGE, configs.sam2_processor, "facebook/sam2.1-hiera-large"
        ),
    ),
    _sam_like(
        "edgetam", ("edgetam", "edgetam_video"), "EdgeTamModel", "Sam2ImageProcessor", "EdgeTAM", segmenter=_SAM2_LIKE,
        random=RandomBuild(configs.EDGETAM_TINY, configs.EDGETAM_FULL, configs.sam2_processor, "yonigozlan/EdgeTAM-hf"),
    ),
    Family(
        "owlv2", "owlv2", ("owlv2",), "Owlv2ForObjectDetection", "Owlv2ImageProcessor", "OWLv2",
        random=RandomBuild(
            configs.OWLV2_TINY, configs.OWLV2_BASE, configs.owlv2_processor, "google/owlv2-base-patch16-ensemble",
            soften_tiny=configs.soften_owlv2,
        ),
    ),
    Family(
        "sam3", "sam3", ("sam3", "sam3_video"), "Sam3Model", "Sam3Processor", "SAM 3",
        random=RandomBuild(configs.SAM3_TINY, configs.SAM3_FULL, configs.sam3_processor, "facebook/sam3"),
    ),
    Family(
        "binder", "pe_audio_video", ("pe_audio_video",), "PeAudioVideoModel", "PeAudioVideoProcessor", "PE-AV",
        binder=BinderRecipe(bind_mode="calibrated", calibrated=True),
        random=RandomBuild(
            configs.PE_AUDIO_VIDEO_TINY, configs.PE_AUDIO_VIDEO_LARGE, configs.pe_audio_video_processor,
            "facebook/pe-av-large", soften=configs.soften_pe_audio_video,
        ),
    ),
    Family(
        "binder", "imagebind", (), None, None, "ImageBind",
        binder=BinderRecipe(bind_mode="softmax", calibrated=False),
    ),
    Family(
        "tracker", "sam2_video", ("sam2_video",), "Sam2VideoModel", "Sam2VideoProcessor", "SAM 2 / 2.1 video",
        random=RandomBuild(
            configs.SAM2_VIDEO_TINY, configs.SAM2_VIDEO_LARGE, configs.tracker_processor, "facebook/sam2.1-hiera-large",
            soften=configs.soften_tracker,
        ),
    ),
    Family(
        "tracker", "edgetam_video", ("edgetam_video",), "EdgeTamVideoModel", "Sam2VideoProcessor", "EdgeTAM video",
        random=RandomBuild(
            configs.EDGETAM_VIDEO_TINY, configs.EDGETAM_VIDEO_FULL, configs.tracker_processor, "yonigozlan/EdgeTAM-hf",
            soften=configs.soften_tracker,
        ),
    ),
)
"""Every family of every component; a component's first family with a model class is its
default (the paper's, or the first one cmsf ran), which its random presets build."""


def families_of(component: str) -> tuple[Family, ...]:
    """The families ``component`` accepts, in table order (none for a component without families)."""
    return tuple(family for family in FAMILY_TABLE if family.component == component)


def default_family(component: str) -> Family:
    """The first family of ``component`` with a model class (see :data:`FAMILY_TABLE`)."""
    return next(family for family in families_of(component) if family.model_class is not None)


def family_named(component: str, name: str) -> Family:
    """The family of ``component`` called ``name`` (its own ``model_type``).

    Raises:
        ValueError: ``component`` has no such family; the message names the accepted ones.
    """
    for family in families_of(component):
        if family.name == name:
            return family
    names = ", ".join(repr(family.name) for family in families_of(component))
    raise ValueError(f"family: {component} has no family {name!r}; expected one of {names}")


def family_of(component: str, model_type: str) -> Optional[Family]:
    """The family of ``component`` that loads a checkpoint whose config says ``model_type``, or
    None when ``component`` accepts none that does."""
    for family in families_of(component):
        if model_type in family.model_types:
            return family
    return None


def accepted_types(component: str) -> tuple[str, ...]:
    """Every config ``model_type`` that ``component`` loads, in table order."""
    return tuple(t for family in families_of(component) for t in family.model_types)


def accepted_names(component: str) -> list[str]:
    """What ``component`` accepts, for messages: every ``model_type`` of its Hugging Face families,
    then the families that are not (``"imagebind"`` for the binder)."""
    others = [family.name for family in families_of(component) if family.model_class is None]
    return list(accepted_types(component)) + others


def load_processor(family: Family, source: str) -> Any:
    """The processor of ``family`` from ``source`` (a hub id or a local folder), as the family's own
    documentation loads it (SAM-family segmenters: the image processor, which also post-processes
    the masks; GroundingDINO: its processor from its image processor and tokenizer)."""
    processor_class = getattr(transformers, family.processor)
    if not family.processor_parts:
        return processor_class.from_pretrained(source)
    parts = {argument: getattr(transformers, part).from_pretrained(source) for argument, part in family.processor_parts}
    return processor_class(**parts)


def loaded_family(component: str, model: nn.Module) -> Family:
    """The family of a loaded ``component`` model, from its config's ``model_type``.

    Raises:
        ValueError: a model of a family ``component`` does not accept (naming them).
    """
    model_type = str(model.config.model_type)
    family = family_of(component, model_type)
    if family is None:
        raise ValueError(
            f"models: the {component} component is a {model_type!r} model; expected one of {accepted_names(component)}"
        )
    return family
