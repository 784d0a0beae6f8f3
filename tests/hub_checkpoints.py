"""Every Hugging Face hub id cmsf names (presets in ``cmsf/models/loading.py``, the random
builders' ``FULL_CHECKPOINTS`` in ``cmsf/models/random_families.py``, and the README), as the hub
ships it: its ``config.json`` ``model_type`` and ``architectures``, and the processor class its
``processor_config.json`` / ``preprocessor_config.json`` names (with the parts it holds), with the
public source these were read from.

``config_read`` says whether a copy of the published ``config.json`` itself (or a report quoting
its fields) was read; where it is False the types come from the conversion script in transformers
that wrote the checkpoint, or its documentation, and the published file was not seen.

:func:`save_hub_like` saves a tiny random model of exactly those types (config class, model class,
processor class and its parts) with ``save_pretrained``, for the per-id tests in
``tests/test_hub_checkpoints.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import transformers

from cmsf.models.random_families import family_config, family_processor, soften_family, tiny_clip_tokenizer
from cmsf.models.random_models import build_random, random_config, random_processor, soften_tiny

CONVERT = "github.com/huggingface/transformers src/transformers/models/"


@dataclass(frozen=True)
class HubCheckpoint:
    """One hub id: the component that loads it, its config's ``model_type`` and
    ``architectures``, its processor class and the classes of the processor's parts, where that
    was read, and whether the published ``config.json`` itself was seen."""

    hub_id: str
    component: str
    model_type: str
    architectures: tuple[str, ...]
    processor: str
    parts: tuple[str, ...]
    source: str
    config_read: bool


HUB_CHECKPOINTS: tuple[HubCheckpoint, ...] = (
    HubCheckpoint(
        "MIT/ast-finetuned-audioset-10-10-0.4593", "ast", "audio-spectrogram-transformer",
        ("ASTForAudioClassification",), "ASTFeatureExtractor", (),
        CONVERT + "audio_spectrogram_transformer/convert_audio_spectrogram_transformer_original_to_pytorch.py "
        "(pushes MIT/<name>: ASTForAudioClassification + ASTFeatureExtractor)", False,
    ),
    HubCheckpoint(
        "IDEA-Research/grounding-dino-tiny", "grounding_dino", "grounding-dino",
        ("GroundingDinoForObjectDetection",), "GroundingDinoProcessor",
        ("GroundingDinoImageProcessor", "BertTokenizer"),
        CONVERT + "grounding_dino/convert_grounding_dino_to_hf.py and the model card's AutoProcessor example",
        False,
    ),
    HubCheckpoint(
        "facebook/sam-vit-huge", "sam", "sam", ("SamModel",), "SamProcessor", ("SamImageProcessor",),
        CONVERT + "sam/convert_sam_to_hf.py (SamModel + SamProcessor(SamImageProcessor))", False,
    ),
    HubCheckpoint(
        "facebook/sam-vit-base", "sam", "sam", ("SamModel",), "SamProcessor", ("SamImageProcessor",),
        CONVERT + "sam/convert_sam_to_hf.py (README example: --model sam=facebook/sam-vit-base)", False,
    ),
    HubCheckpoint(
        "google/owlv2-base-patch16-ensemble", "owlv2", "owlv2", ("Owlv2ForObjectDetection",), "Owlv2Processor",
        ("Owlv2ImageProcessor", "CLIPTokenizer"),
        CONVERT + "owlv2/convert_owlv2_to_hf.py (Owlv2ForObjectDetection + Owlv2Processor)", False,
    ),
    HubCheckpoint(
        "facebook/sam2.1-hiera-large", "sam", "sam2_video", ("Sam2VideoModel",), "Sam2VideoProcessor",
        ("Sam2ImageProcessorFast", "Sam2VideoVideoProcessor"),
        CONVERT + "sam2_video/convert_sam2_video_to_hf.py (one script for sam2.1_hiera_tiny … _large: saves "
        "Sam2VideoModel and Sam2VideoProcessor(Sam2ImageProcessorFast, Sam2VideoVideoProcessor)); the id is "
        "loaded as Sam2Model.from_pretrained(\"facebook/sam2.1-hiera-large\") in public code",
        False,
    ),
    HubCheckpoint(
        "facebook/sam2.1-hiera-tiny", "sam", "sam2_video", ("Sam2VideoModel",), "Sam2VideoProcessor",
        ("Sam2ImageProcessorFast", "Sam2VideoVideoProcessor"),
        "public projects quoting its config.json: \"model_type\": \"sam2_video\", \"architectures\": "
        "[\"Sam2VideoModel\"]; " + CONVERT + "sam2_video/convert_sam2_video_to_hf.py",
        True,
    ),
    HubCheckpoint(
        "yonigozlan/EdgeTAM-hf", "sam", "edgetam_video", ("EdgeTamVideoModel",), "Sam2VideoProcessor",
        ("Sam2ImageProcessorFast", "Sam2VideoVideoProcessor"),
        CONVERT + "edgetam_video/convert_edgetam_video_to_hf.py (EdgeTamVideoModel + Sam2VideoProcessor); a public "
        "audit of https://huggingface.co/yonigozlan/EdgeTAM-hf/raw/main/config.json: architectures "
        "[\"EdgeTamVideoModel\"], model_type edgetam_video",
        True,
    ),
    HubCheckpoint(
        "syscv-community/sam-hq-vit-huge", "sam", "sam_hq", ("SamHQModel",), "SamHQProcessor", ("SamImageProcessor",),
        "a public audit of the syscv-community/sam-hq-vit-{base,large,huge} config.json and "
        "preprocessor_config.json (SamHQProcessor with SamImageProcessor)",
        True,
    ),
    HubCheckpoint(
        "openmmlab-community/mm_grounding_dino_large_all", "grounding_dino", "mm-grounding-dino",
        ("MMGroundingDinoForObjectDetection",), "GroundingDinoProcessor",
        ("GroundingDinoImageProcessor", "BertTokenizer"),
        CONVERT + "mm_grounding_dino/convert_mm_grounding_dino_to_hf.py (mm_grounding_dino_large_all: Swin-L "
        "pretrain_all checkpoint) and public code loading it with AutoModelForZeroShotObjectDetection",
        False,
    ),
    HubCheckpoint(
        "facebook/sam3", "sam3", "sam3_video", ("Sam3VideoModel",), "Sam3VideoProcessor",
        ("Sam3ImageProcessorFast", "Sam2VideoVideoProcessor", "CLIPTokenizerFast"),
        CONVERT + "sam3/convert_sam3_to_hf.py (config.architectures = [\"Sam3VideoModel\"], Sam3VideoConfig; "
        "Sam3VideoProcessor(Sam3ImageProcessorFast, Sam2VideoVideoProcessor, CLIPTokenizerFast)); gated",
        False,
    ),
    HubCheckpoint(
        "facebook/pe-av-large", "binder", "pe_audio_video", ("PeAudioVideoModel",), "PeAudioVideoProcessor",
        ("PeAudioFeatureExtractor", "PeVideoVideoProcessor", "tokenizer"),
        CONVERT + "pe_audio_video/convert_pe_audio_video_to_hf.py (PeAudioVideoConfig() + PeAudioVideoModel) and "
        "docs/source/en/model_doc/pe_audio_video.md (PeAudioVideoProcessor.from_pretrained(\"facebook/pe-av-large\"))",
        False,
    ),
)
"""The hub ids, one entry each."""

_SEED = 5


def _sam2_video_config(image: transformers.PretrainedConfig, video_class: type) -> transformers.PretrainedConfig:
    """A tiny video config around a tiny image config (memory parts shrunk to 16-32 channels)."""
    small = dict(
        memory_attention_hidden_size=32, memory_attention_mlp_hidden_size=64, memory_attention_num_layers=1,
        memory_encoder_hidden_size=32, memory_encoder_output_channels=16, mask_downsampler_embed_dim=32,
        memory_fuser_embed_dim=32, memory_fuser_intermediate_dim=64, image_size=image.prompt_encoder_config.image_size,
    )  # fmt: skip
    if video_class is transformers.EdgeTamVideoConfig:
        small.update(perceiver_resampler_hidden_size=16, perceiver_resampler_mlp_intermediate_size=32,
                     perceiver_resampler_attention_head_dim=16, perceiver_resampler_num_latents=16,
                     perceiver_resampler_num_layers=1)  # fmt: skip
    parts = image.to_dict()
    keep = ("vision_config", "prompt_encoder_config", "mask_decoder_config")
    return video_class(**{key: parts[key] for key in keep}, **small)


def _sam3_video_config(image: transformers.PretrainedConfig) -> transformers.PretrainedConfig:
    side = image.vision_config.backbone_config.image_size
    tracker = transformers.Sam3TrackerVideoConfig(
        vision_config=image.vision_config.to_dict(), image_size=side,
        prompt_encoder_config=dict(hidden_size=32, image_size=side, patch_size=14, mask_input_channels=8),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
        memory_attention_hidden_size=32, memory_encoder_hidden_size=32, memory_encoder_output_channels=16,
        mem_dim=16, memory_attention_num_layers=1, memory_fuser_intermediate_dim=64,
        memory_attention_feed_forward_hidden_size=64,
    )  # fmt: skip
    return transformers.Sam3VideoConfig(detector_config=image.to_dict(), tracker_config=tracker.to_dict())


def _model_and_processor(entry: HubCheckpoint) -> tuple[Callable[[], Any], Any]:
    """(model builder, processor) of ``entry``'s exact types, tiny."""
    name, kind = entry.component, entry.model_type
    if kind in ("audio-spectrogram-transformer", "grounding-dino", "sam", "owlv2"):
        config = random_config(name, "tiny")
        processor = random_processor(name, "tiny", config)
        if kind == "sam":
            processor = transformers.SamProcessor(image_processor=processor)
        if kind == "owlv2":
            processor = transformers.Owlv2Processor(image_processor=processor, tokenizer=tiny_clip_tokenizer())
        return lambda: getattr(transformers, entry.architectures[0])(config), processor
    image_family = {"sam2_video": "sam2", "edgetam_video": "edgetam", "sam3_video": "sam3"}.get(kind, kind)
    config = family_config(name, image_family, "tiny")
    processor = family_processor(name, image_family, "tiny", config)
    if kind == "sam_hq":
        processor = transformers.SamHQProcessor(image_processor=processor)
    if kind in ("sam2_video", "edgetam_video"):
        video_class = transformers.Sam2VideoConfig if kind == "sam2_video" else transformers.EdgeTamVideoConfig
        config = _sam2_video_config(config, video_class)
        processor = transformers.Sam2VideoProcessor(
            image_processor=processor, video_processor=transformers.Sam2VideoVideoProcessor(size=dict(processor.size))
        )
    if kind == "sam3_video":
        config = _sam3_video_config(config)
        image_processor = processor.image_processor
        video = transformers.Sam2VideoVideoProcessor(size=dict(image_processor.size), image_mean=[0.5] * 3, image_std=[0.5] * 3)
        processor = transformers.Sam3VideoProcessor(image_processor=image_processor, video_processor=video,
                                          tokenizer=processor.tokenizer)  # fmt: skip
    return lambda: getattr(transformers, entry.architectures[0])(config), processor


def save_hub_like(entry: HubCheckpoint, folder: Path) -> Path:
    """Save a tiny seeded random model of ``entry``'s exact model and processor classes to
    ``folder`` (``save_pretrained`` of both) and return ``folder``."""
    build, processor = _model_and_processor(entry)
    model = build_random(build, _SEED, torch.device("cpu")).eval()
    if entry.model_type in ("audio-spectrogram-transformer", "grounding-dino", "sam", "owlv2"):
        soften_tiny(entry.component, model)
    soften_family(entry.model_type, model)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
