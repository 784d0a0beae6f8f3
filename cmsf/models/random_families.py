"""Seeded-random configs and processors of the 2025 model families, built in code (no download):
SAM-HQ, SAM 2 / 2.1, EdgeTAM (the ``sam`` component), MM-GroundingDINO (``grounding_dino``),
SAM 3 (``sam3``), PE-AV (``binder``) and SAM 2.1's video model (``tracker``).

Each family has a ``"tiny"`` config (CPU tests: a few thousand to a few hundred thousand
parameters) and a ``"full"`` one (the architecture of the published checkpoint named in
:data:`FULL_CHECKPOINTS`, for speed benchmarks with random weights). :func:`family_config` and
:func:`family_processor` are what :mod:`cmsf.models.loading` calls; the paper's own families (SAM,
GroundingDINO, AST, OWLv2, ImageBind) stay in :mod:`cmsf.models.random_models`.
"""

from __future__ import annotations

import string
from typing import Any

import torch
import transformers as tf
from torch import nn

from cmsf.io.audioset import audioset_labels
from cmsf.models.random_models import random_config, tiny_bert_tokenizer, tiny_bert_vocab

__all__ = [
    "FAMILY_SEEDS",
    "FULL_CHECKPOINTS",
    "RANDOM_FAMILIES",
    "family_config",
    "family_processor",
    "soften_family",
    "tiny_clip_tokenizer",
]

RANDOM_FAMILIES = {
    "sam": ("sam_hq", "sam2", "edgetam"),
    "grounding_dino": ("mm-grounding-dino",),
    "sam3": ("sam3",),
    "binder": ("pe_audio_video",),
    "tracker": ("sam2_video",),
}
"""The families this module builds, per component (their config ``model_type``)."""

FAMILY_SEEDS = {"sam3": 1011, "binder": 1012, "tracker": 1013}
"""Seeds of the components that :data:`cmsf.models.random_models.SEEDS` does not cover."""

FULL_CHECKPOINTS = {
    "sam2": "facebook/sam2.1-hiera-large",
    "sam2_video": "facebook/sam2.1-hiera-large",
    "mm-grounding-dino": "openmmlab-community/mm_grounding_dino_large_all",
    "sam3": "facebook/sam3",
    "pe_audio_video": "facebook/pe-av-large",
    "sam_hq": "syscv-community/sam-hq-vit-huge",
    "edgetam": "yonigozlan/EdgeTAM-hf",
}
"""The checkpoint whose architecture each ``"full"`` config reproduces."""

_TINY_SIDE = 64  # the tiny SAM-family input side, as the tiny SAM of cmsf.models.random_models


def _sam2_like(family: str, tiny: bool) -> tf.PretrainedConfig:
    if family == "sam2":
        if not tiny:  # facebook/sam2.1-hiera-large (transformers' SAM 2 conversion script)
            backbone = tf.Sam2HieraDetConfig(
                hidden_size=144,
                embed_dim_per_stage=[144, 288, 576, 1152],
                num_attention_heads_per_stage=[2, 4, 8, 16],
                blocks_per_stage=[2, 6, 36, 4],
                global_attention_blocks=[23, 33, 43],
                window_positional_embedding_background_size=[7, 7],
                window_size_per_stage=[8, 4, 16, 8],
            )
            vision = tf.Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[1152, 576, 288, 144])
            return tf.Sam2Config(
                vision_config=vision,
                enable_temporal_pos_encoding_for_object_pointers=True,
                enable_occlusion_spatial_embedding=True,
            )
        # four Hiera stages of 16, 8, 4 and 2 tokens a side; the global block is no stage's first
        backbone = tf.Sam2HieraDetConfig(
            hidden_size=8,
            num_attention_heads=1,
            image_size=[_TINY_SIDE, _TINY_SIDE],
            blocks_per_stage=[1, 1, 2, 1],
            embed_dim_per_stage=[8, 16, 32, 64],
            num_attention_heads_per_stage=[1, 1, 1, 1],
            window_size_per_stage=[2, 2, 2, 2],
            global_attention_blocks=[3],
            window_positional_embedding_background_size=[2, 2],
        )
        vision = tf.Sam2VisionConfig(
            backbone_config=backbone,
            backbone_channel_list=[64, 32, 16, 8],
            backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]],
            fpn_hidden_size=32,
        )
        return tf.Sam2Config(
            vision_config=vision,
            prompt_encoder_config=tf.Sam2PromptEncoderConfig(
                hidden_size=32, image_size=_TINY_SIDE, patch_size=16, mask_input_channels=8
            ),
            mask_decoder_config=tf.Sam2MaskDecoderConfig(
                hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32
            ),
        )
    # EdgeTAM: SAM 2's decoder on a timm RepViT backbone
    if not tiny:  # yonigozlan/EdgeTAM-hf: RepViT-M1 backbone (the config's defaults, architecture fixed)
        vision = tf.EdgeTamVisionConfig(
            backbone_config=dict(
                model_type="timm_wrapper",
                architecture="repvit_m1",
                model_args=dict(in_chans=3, features_only=True, out_indices=[0, 1, 2, 3]),
                num_classes=2,
            )
        )
        return tf.EdgeTamConfig(vision_config=vision)
    vision = tf.EdgeTamVisionConfig(
        backbone_config=dict(
            model_type="timm_wrapper",
            architecture="repvit_m1",
            model_args=dict(
                in_chans=3, features_only=True, out_indices=[0, 1, 2, 3], embed_dim=(8, 16, 32, 64), depth=(1, 1, 1, 1)
            ),
            num_classes=2,
        ),
        backbone_channel_list=[64, 32, 16, 8],
        backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]],
        fpn_hidden_size=32,
    )
    return tf.EdgeTamConfig(
        vision_config=vision,
        prompt_encoder_config=tf.EdgeTamPromptEncoderConfig(
            hidden_size=32, image_size=_TINY_SIDE, patch_size=16, mask_input_channels=8
        ),
        mask_decoder_config=tf.EdgeTamMaskDecoderConfig(
            hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32
        ),
    )


_TINY_VIDEO_SIDE = 64  # the tiny tracker's input side: 16, 8 and 4 feature tokens a side


def _sam2_video(tiny: bool) -> tf.PretrainedConfig:
    """SAM 2.1's video model. Full: facebook/sam2.1-hiera-large (its Hiera-L image encoder, the
    config's memory defaults). Tiny: a 4-stage Hiera of 8–64 channels at 64 px; the decoder and
    memory widths are 128 and the memory 64 channels, because transformers' memory attention
    reads 64-channel memories (its image cross-attention's key width is fixed at 64) and splits
    object pointers into memory-width pieces only when they are wider than the memory."""
    if not tiny:
        return tf.Sam2VideoConfig(vision_config=_sam2_like("sam2", tiny=False).vision_config)
    side = _TINY_VIDEO_SIDE
    backbone = tf.Sam2HieraDetConfig(
        hidden_size=8,
        num_attention_heads=1,
        image_size=[side, side],
        blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[8, 16, 32, 64],
        num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[2, 2, 2, 2],
        global_attention_blocks=[3],
        window_positional_embedding_background_size=[2, 2],
    )
    vision = tf.Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[64, 32, 16, 8],
        backbone_feature_sizes=[[side // 4] * 2, [side // 8] * 2, [side // 16] * 2],
        fpn_hidden_size=128,
    )
    return tf.Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=dict(hidden_size=128, image_size=side, patch_size=16, mask_input_channels=8),
        mask_decoder_config=dict(hidden_size=128, mlp_dim=128, num_attention_heads=2, iou_head_hidden_dim=32),
        image_size=side,
        memory_attention_hidden_size=128,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=[side // 16, side // 16],
        memory_encoder_hidden_size=128,
        memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128,
        memory_fuser_intermediate_dim=64,
        memory_fuser_num_layers=1,
    )


def _sam_hq(tiny: bool) -> tf.PretrainedConfig:
    if not tiny:  # syscv-community/sam-hq-vit-huge: SAM ViT-H plus the HQ decoder (vit_dim 1280)
        sam = random_config("sam", "paper").to_dict()
        return tf.SamHQConfig(
            vision_config=sam["vision_config"],
            mask_decoder_config=dict(vit_dim=1280),
        )
    sam = random_config("sam", "tiny")  # the tiny SAM, with the HQ decoder on top
    return tf.SamHQConfig(
        vision_config=sam.vision_config.to_dict(),
        prompt_encoder_config=sam.prompt_encoder_config.to_dict(),
        mask_decoder_config=dict(
            hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=32, vit_dim=32
        ),
        initializer_range=sam.initializer_range,
    )


def _mm_grounding_dino(tiny: bool) -> tf.PretrainedConfig:
    if not tiny:  # openmmlab-community/mm_grounding_dino_large_all: Swin-L backbone, BERT-base text
        return tf.MMGroundingDinoConfig(
            backbone_config=dict(
                model_type="swin",
                embed_dim=192,
                depths=[2, 2, 18, 2],
                num_heads=[6, 12, 24, 48],
                window_size=12,
                image_size=384,
                out_indices=[2, 3, 4],
            )
        )
    tiny_gdino = random_config("grounding_dino", "tiny").to_dict()  # same sizes as cmsf's tiny GroundingDINO
    keep = (
        "backbone_config", "text_config", "d_model", "encoder_layers", "decoder_layers", "encoder_ffn_dim",
        "decoder_ffn_dim", "encoder_attention_heads", "decoder_attention_heads", "num_queries", "encoder_n_points",
        "decoder_n_points",
    )
    return tf.MMGroundingDinoConfig(**{key: tiny_gdino[key] for key in keep})


def _sam3(tiny: bool) -> tf.PretrainedConfig:
    if not tiny:  # facebook/sam3: the config's defaults
        return tf.Sam3Config()
    backbone = tf.Sam3ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=56,
        patch_size=14,
        window_size=2,
        global_attn_indexes=[1],
    )
    vocabulary = len(tiny_clip_vocab())
    return tf.Sam3Config(
        vision_config=tf.Sam3VisionConfig(backbone_config=backbone, fpn_hidden_size=32, scale_factors=[2.0, 1.0]),
        text_config=dict(
            vocab_size=vocabulary,
            hidden_size=32,
            intermediate_size=64,
            projection_dim=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=32,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ),
        geometry_encoder_config=tf.Sam3GeometryEncoderConfig(
            hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64
        ),
        detr_encoder_config=tf.Sam3DETREncoderConfig(
            hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64
        ),
        detr_decoder_config=tf.Sam3DETRDecoderConfig(
            hidden_size=32, num_layers=1, num_queries=8, num_attention_heads=2, intermediate_size=64
        ),
        mask_decoder_config=tf.Sam3MaskDecoderConfig(hidden_size=32, num_upsampling_stages=2),
    )


# PE-AV's tiny towers: a 1-layer transformer over a tiny DAC codec (audio) and a tiny timm PE ViT (video)
_TINY_PE_ENCODER = dict(
    hidden_size=32, intermediate_size=40, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
    head_dim=16, max_position_embeddings=512,
)
_TINY_PE_VIDEO_SIDE = 14


def _pe_audio_video(tiny: bool) -> tf.PretrainedConfig:
    if not tiny:  # facebook/pe-av-large: the config's defaults
        return tf.PeAudioVideoConfig()
    audio = dict(
        dac_config=dict(
            encoder_hidden_size=8, downsampling_ratios=[2, 4, 4], decoder_hidden_size=8, n_codebooks=2,
            codebook_size=16, codebook_dim=8,
        ),
        **_TINY_PE_ENCODER,
    )
    video = dict(
        vision_config=dict(
            architecture="vit_pe_core_large_patch14_336",
            model_args=dict(embed_dim=32, img_size=(_TINY_PE_VIDEO_SIDE, _TINY_PE_VIDEO_SIDE), depth=1, num_heads=2),
            num_classes=4,
        ),
        **_TINY_PE_ENCODER,
    )
    special = dict(pad_token_id=0, bos_token_id=101, eos_token_id=102, cls_token_id=101, sep_token_id=102)
    return tf.PeAudioVideoConfig(
        text_config=dict(
            vocab_size=len(tiny_bert_vocab()), hidden_size=32, intermediate_size=40, num_hidden_layers=1,
            num_attention_heads=2, **special,
        ),
        audio_video_config=dict(audio_config=audio, video_config=video, **_TINY_PE_ENCODER),
    )


def family_config(component: str, family: str, size: str) -> tf.PretrainedConfig:
    """The config of a randomly initialised ``family`` (a config ``model_type``) of
    ``component``: ``size="tiny"`` (CPU tests) or ``"full"`` (the architecture of
    :data:`FULL_CHECKPOINTS`\\ [family])."""
    if family not in RANDOM_FAMILIES.get(component, ()):
        raise ValueError(f"family: {component} has no random {family!r} config; expected one of {RANDOM_FAMILIES}")
    tiny = size == "tiny"
    if family in ("sam2", "edgetam"):
        return _sam2_like(family, tiny)
    if family == "sam_hq":
        return _sam_hq(tiny)
    if family == "sam2_video":
        return _sam2_video(tiny)
    if family == "mm-grounding-dino":
        return _mm_grounding_dino(tiny)
    if family == "sam3":
        return _sam3(tiny)
    return _pe_audio_video(tiny)


def tiny_clip_vocab() -> dict[str, int]:
    """A CLIP BPE vocabulary built in code: the start/end tokens, lowercase letters, digits and
    punctuation (each alone and as a word end ``</w>``), and every word of the AudioSet label
    names whole (so every AudioSet tag stays well inside SAM 3's 32 text positions)."""
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for piece in string.ascii_lowercase + string.digits + ",'()-&/:;!\".+*%$#@?":
        vocab.setdefault(piece, len(vocab))
        vocab.setdefault(piece + "</w>", len(vocab))
    for word, merges in _audioset_word_merges():
        for left, right in merges:
            vocab.setdefault(left + right, len(vocab))
        vocab.setdefault(word, len(vocab))
    return vocab


def _audioset_word_merges() -> list[tuple[str, list[tuple[str, str]]]]:
    """For each word of the AudioSet labels (as CLIP's pre-tokenizer splits them: letter runs),
    the left-to-right merges that build it: ``d o``, ``do g</w>``."""
    words: dict[str, None] = {}
    for label in audioset_labels():
        run = ""
        for char in label.lower() + " ":
            if char.isalpha():
                run += char
            else:
                if len(run) > 1:
                    words.setdefault(run, None)
                run = ""
    out = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        merges, left = [], pieces[0]
        for right in pieces[1:]:
            merges.append((left, right))
            left = left + right
        out.append((left, merges))
    return out


def tiny_clip_tokenizer() -> tf.CLIPTokenizer:
    """The CLIP tokenizer of the tiny SAM 3 (see :func:`tiny_clip_vocab`), built without a download."""
    merges = [pair for _, word_merges in _audioset_word_merges() for pair in word_merges]
    unique = list(dict.fromkeys(merges))
    return tf.CLIPTokenizer(vocab=tiny_clip_vocab(), merges=unique)


def family_processor(component: str, family: str, size: str, config: tf.PretrainedConfig) -> Any:
    """The processor of a random ``family`` model, built in code to match ``config``: the
    family's image processor (SAM-family segmenters), a ``GroundingDinoProcessor``
    (MM-GroundingDINO), a ``Sam3Processor`` (SAM 3), a ``PeAudioVideoProcessor`` (PE-AV)."""
    tiny = size == "tiny"
    if family == "sam_hq":
        side = config.vision_config.image_size
        mask_side = config.prompt_encoder_config.image_embedding_size * 4
        return tf.SamImageProcessor(
            size={"longest_edge": side},
            pad_size={"height": side, "width": side},
            mask_size={"longest_edge": mask_side},
            mask_pad_size={"height": mask_side, "width": mask_side},
        )
    if family in ("sam2", "edgetam"):
        side = config.prompt_encoder_config.image_size
        mask_side = 4 * (side // config.prompt_encoder_config.patch_size)
        return tf.Sam2ImageProcessor(size={"height": side, "width": side}, mask_size={"height": mask_side, "width": mask_side})
    if family == "mm-grounding-dino":
        image_size = {"shortest_edge": 128, "longest_edge": 192} if tiny else {"shortest_edge": 800, "longest_edge": 1333}
        return tf.GroundingDinoProcessor(
            image_processor=tf.GroundingDinoImageProcessor(size=image_size), tokenizer=tiny_bert_tokenizer()
        )
    if family == "sam3":
        side = config.vision_config.backbone_config.image_size
        return tf.Sam3Processor(
            image_processor=tf.Sam3ImageProcessor(size={"height": side, "width": side}), tokenizer=tiny_clip_tokenizer()
        )
    if family == "pe_audio_video":
        side = _TINY_PE_VIDEO_SIDE if tiny else 336
        hop = config.audio_video_config.audio_config.dac_config.hop_length
        return tf.PeAudioVideoProcessor(
            feature_extractor=tf.PeAudioFeatureExtractor(sampling_rate=48_000, hop_length=hop),
            video_processor=tf.PeVideoVideoProcessor(
                size={"height": side, "width": side}, do_resize=True, do_rescale=True, do_normalize=True,
                image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
            ),
            tokenizer=tiny_bert_tokenizer(),
        )
    if family == "sam2_video":  # the image processor prepares prompts, the video processor frames
        side = config.image_size
        mask_side = 4 * (side // config.prompt_encoder_config.patch_size)
        return tf.Sam2VideoProcessor(
            image_processor=tf.Sam2ImageProcessor(
                size={"height": side, "width": side}, mask_size={"height": mask_side, "width": mask_side}
            ),
            video_processor=tf.Sam2VideoVideoProcessor(size={"height": side, "width": side}),
        )
    raise AssertionError(family)  # pragma: no cover


def soften_family(family: str, model: nn.Module) -> None:
    """Random PE-AV starts with a zero audio-video logit scale (every match probability exactly
    0.5, whatever the inputs); give it a scale of 10 (bias 0) so that the calibrated scores
    differ between proposals (around 0.5 for random towers).

    A random SAM 2 video model scores every object near logit 0 (±0.001), so whether a tracked
    object counts as present (logit > 0, else its mask is emptied) flips with rounding; a bias
    of 2 on its object-score head keeps tracked objects present, as a trained tracker keeps a
    visible object."""
    if family == "sam2_video":
        with torch.no_grad():
            model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(2.0)
    if family == "pe_audio_video":
        with torch.no_grad():
            model.audio_video_logit_scale.fill_(10.0)
            model.audio_video_logit_bias.fill_(0.0)
