"""The random-weight configs of every model family, as data: a ``"tiny"`` config (CPU tests, a
few thousand to a few hundred thousand parameters) and a full one (the architecture of the
published checkpoint, for speed benchmarks), with the processor built in code to match each and
the tiny tokenizers GroundingDINO, PE-AV and SAM 3 read text with (no download).

Each config is a :class:`ConfigSpec`: a transformers config class name and its keyword
arguments (plain values and dicts; :class:`Sub` where the config class takes a config object;
:class:`Computed` where a value is computed when the config is built). The family table
(:mod:`cmsf.models.families`) holds them; :mod:`cmsf.models.random_models` and
:mod:`cmsf.models.random_families` build from it.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import torch
import transformers
from torch import nn

from cmsf.io.audioset import audioset_labels

__all__ = [
    "Computed",
    "ConfigSpec",
    "Sub",
    "tiny_bert_tokenizer",
    "tiny_bert_vocab",
    "tiny_clip_tokenizer",
    "tiny_clip_vocab",
]


@dataclass(frozen=True)
class Sub:
    """A nested config given to its parent as an object of transformers' ``config`` class."""

    config: str
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class Computed:
    """A config value computed when the config is built (``compute()``)."""

    compute: Callable[[], Any]


@dataclass(frozen=True)
class ConfigSpec:
    """A transformers config as data: ``config`` (its class name in ``transformers``) built with
    ``fields``; with ``base``, the keys ``inherit`` of ``base``'s built config (as ``to_dict``
    gives them) come first."""

    config: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    base: Optional["ConfigSpec"] = None
    inherit: tuple[str, ...] = ()

    def build(self) -> transformers.PretrainedConfig:
        inherited = {}
        if self.base is not None:
            base = self.base.build().to_dict()
            inherited = {key: base[key] for key in self.inherit}
        return getattr(transformers, self.config)(**inherited, **_resolved(self.fields))


def _resolved(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` with every :class:`Sub` built and every :class:`Computed` computed, at any depth
    of nested dicts."""
    out = {}
    for key, value in fields.items():
        if isinstance(value, Sub):
            value = getattr(transformers, value.config)(**_resolved(value.fields))
        elif isinstance(value, Computed):
            value = value.compute()
        elif isinstance(value, Mapping):
            value = _resolved(value)
        out[key] = value
    return out


# ------------------------------------------------------------------------------ tiny tokenizers
# The tiny BERT vocabulary lays out BERT-uncased's ids where GroundingDINO reads them: [CLS],
# [SEP], "." and "?" (the model's phrase-splitting tokens, cmsf.models.families.BERT_PHRASE_TOKENS).
_BERT_CLS, _BERT_SEP, _BERT_DOT, _BERT_QUESTION = 101, 102, 1012, 1029


def tiny_bert_vocab() -> dict[str, int]:
    """A character-level WordPiece vocabulary laid out like BERT-uncased where it matters:
    ``[PAD]`` 0, ``[UNK]`` 100, ``[CLS]`` 101, ``[SEP]`` 102, ``[MASK]`` 103, ``"."`` 1012,
    ``"?"`` 1029 (GroundingDINO splits phrases at the ids of [CLS], [SEP], "." and "?").
    Lowercase letters, digits and common punctuation, each as a word start and as a ``##``
    continuation, so every lowercase ASCII phrase tokenizes without ``[UNK]``."""
    pieces = list(string.ascii_lowercase + string.digits + ",'()-&/:;!\"+*%$#@")
    vocab: dict[str, int] = {"[PAD]": 0}
    for i in range(1, 100):
        vocab[f"[unused{i}]"] = i
    vocab.update({"[UNK]": 100, "[CLS]": _BERT_CLS, "[SEP]": _BERT_SEP, "[MASK]": 103})
    next_id = 104
    for piece in pieces + ["##" + p for p in pieces]:
        vocab[piece] = next_id
        next_id += 1
    for i in range(next_id, _BERT_QUESTION + 1):
        vocab[f"[unused{i}]"] = i
    vocab["."] = _BERT_DOT
    vocab["?"] = _BERT_QUESTION
    del vocab[f"[unused{_BERT_DOT}]"], vocab[f"[unused{_BERT_QUESTION}]"]
    return vocab


def tiny_bert_tokenizer() -> transformers.BertTokenizer:
    """A BERT WordPiece tokenizer built in code (no download), see :func:`tiny_bert_vocab`."""
    return transformers.BertTokenizer(vocab=tiny_bert_vocab(), do_lower_case=True)


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


def tiny_clip_tokenizer() -> transformers.CLIPTokenizer:
    """The CLIP tokenizer of the tiny SAM 3 (see :func:`tiny_clip_vocab`), built without a download."""
    merges = [pair for _, word_merges in _audioset_word_merges() for pair in word_merges]
    unique = list(dict.fromkeys(merges))
    return transformers.CLIPTokenizer(vocab=tiny_clip_vocab(), merges=unique)


def _bert_vocab_size() -> int:
    return len(tiny_bert_vocab())


def _clip_vocab_size() -> int:
    return len(tiny_clip_vocab())


def _audioset_id2label() -> dict[int, str]:
    return dict(enumerate(audioset_labels()))


def _audioset_label2id() -> dict[str, int]:
    return {label: i for i, label in enumerate(audioset_labels())}


# ------------------------------------------------------------------------- audio tagger (AST)
_AUDIOSET_LABELS = dict(id2label=Computed(_audioset_id2label), label2id=Computed(_audioset_label2id))
AST_TINY = ConfigSpec(
    "ASTConfig",
    dict(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, frequency_stride=16,
        time_stride=16, max_length=1024, num_mel_bins=128, **_AUDIOSET_LABELS,
    ),
)
AST_FULL = ConfigSpec("ASTConfig", _AUDIOSET_LABELS)  # the defaults are MIT/ast-finetuned-audioset-10-10-0.4593's


def ast_processor(config: transformers.PretrainedConfig, tiny: bool) -> Any:
    return transformers.ASTFeatureExtractor(num_mel_bins=config.num_mel_bins, max_length=config.max_length)


# ----------------------------------------------------------------------- SAM, SAM-HQ (segmenter)
SAM_TINY = ConfigSpec(
    "SamConfig",
    dict(
        vision_config=dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=16, window_size=2,
            global_attn_indexes=[1], output_channels=32, num_pos_feats=16, mlp_dim=64,
            initializer_range=0.02,  # SAM's 1e-10 makes denormal floats, very slow on CPU
        ),
        prompt_encoder_config=dict(hidden_size=32, image_size=64, patch_size=16, mask_input_channels=8),
        mask_decoder_config=dict(
            hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=32
        ),
        # a wider init than SAM's 0.02, so that the tiny decoder's mask logits (std ~3) and IoU
        # predictions spread out: the tests threshold them
        initializer_range=0.3,
    ),
)
SAM_HUGE = ConfigSpec(  # facebook/sam-vit-huge
    "SamConfig",
    dict(
        vision_config=dict(
            hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, global_attn_indexes=[7, 15, 23, 31],
            mlp_dim=5120,
        )
    ),
)
SAM_HQ_TINY = ConfigSpec(  # the tiny SAM, with the HQ decoder on top
    "SamHQConfig",
    dict(
        mask_decoder_config=dict(
            hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=32, vit_dim=32
        ),
    ),
    base=SAM_TINY,
    inherit=("vision_config", "prompt_encoder_config", "initializer_range"),
)
SAM_HQ_HUGE = ConfigSpec(  # syscv-community/sam-hq-vit-huge: SAM ViT-H plus the HQ decoder (vit_dim 1280)
    "SamHQConfig", dict(mask_decoder_config=dict(vit_dim=1280)), base=SAM_HUGE, inherit=("vision_config",)
)


def sam_processor(config: transformers.PretrainedConfig, tiny: bool) -> Any:
    """SAM's and SAM-HQ's image processor: the longest side resized to the model input, padded."""
    side = config.vision_config.image_size
    mask_side = config.prompt_encoder_config.image_embedding_size * 4
    return transformers.SamImageProcessor(
        size={"longest_edge": side},
        pad_size={"height": side, "width": side},
        mask_size={"longest_edge": mask_side},
        mask_pad_size={"height": mask_side, "width": mask_side},
    )


# ---------------------------------------------------------------- SAM 2 / 2.1, EdgeTAM (segmenter)
_TINY_SIDE = 64  # the tiny SAM-family input side, as the tiny SAM's
_TINY_HIERA = Sub(  # four stages of 16, 8, 4 and 2 tokens a side; the global block is no stage's first
    "Sam2HieraDetConfig",
    dict(
        hidden_size=8, num_attention_heads=1, image_size=[_TINY_SIDE, _TINY_SIDE], blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[2, 2, 2, 2], global_attention_blocks=[3],
        window_positional_embedding_background_size=[2, 2],
    ),
)
_TINY_SAM2_VISION = dict(
    backbone_channel_list=[64, 32, 16, 8], backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]], fpn_hidden_size=32
)
_TINY_SAM2_HEADS = dict(
    prompt_encoder_config=dict(hidden_size=32, image_size=_TINY_SIDE, patch_size=16, mask_input_channels=8),
    mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
)
SAM2_TINY = ConfigSpec(
    "Sam2Config",
    dict(
        vision_config=Sub("Sam2VisionConfig", dict(backbone_config=_TINY_HIERA, **_TINY_SAM2_VISION)),
        prompt_encoder_config=Sub("Sam2PromptEncoderConfig", _TINY_SAM2_HEADS["prompt_encoder_config"]),
        mask_decoder_config=Sub("Sam2MaskDecoderConfig", _TINY_SAM2_HEADS["mask_decoder_config"]),
    ),
)
SAM2_LARGE_VISION = Sub(  # facebook/sam2.1-hiera-large (transformers' SAM 2 conversion script)
    "Sam2VisionConfig",
    dict(
        backbone_config=Sub(
            "Sam2HieraDetConfig",
            dict(
                hidden_size=144, embed_dim_per_stage=[144, 288, 576, 1152], num_attention_heads_per_stage=[2, 4, 8, 16],
                blocks_per_stage=[2, 6, 36, 4], global_attention_blocks=[23, 33, 43],
                window_positional_embedding_background_size=[7, 7], window_size_per_stage=[8, 4, 16, 8],
            ),
        ),
        backbone_channel_list=[1152, 576, 288, 144],
    ),
)
SAM2_LARGE = ConfigSpec(
    "Sam2Config",
    dict(
        vision_config=SAM2_LARGE_VISION,
        enable_temporal_pos_encoding_for_object_pointers=True,
        enable_occlusion_spatial_embedding=True,
    ),
)
# EdgeTAM: SAM 2's decoder on a timm RepViT backbone
_REPVIT = dict(model_type="timm_wrapper", architecture="repvit_m1", num_classes=2)
_TINY_REPVIT = dict(
    **_REPVIT,
    model_args=dict(
        in_chans=3, features_only=True, out_indices=[0, 1, 2, 3], embed_dim=(8, 16, 32, 64), depth=(1, 1, 1, 1)
    ),
)
EDGETAM_VISION_FULL = Sub(  # yonigozlan/EdgeTAM-hf: RepViT-M1 backbone (the config's defaults, architecture fixed)
    "EdgeTamVisionConfig",
    dict(backbone_config=dict(**_REPVIT, model_args=dict(in_chans=3, features_only=True, out_indices=[0, 1, 2, 3]))),
)
EDGETAM_TINY = ConfigSpec(
    "EdgeTamConfig",
    dict(
        vision_config=Sub("EdgeTamVisionConfig", dict(backbone_config=_TINY_REPVIT, **_TINY_SAM2_VISION)),
        prompt_encoder_config=Sub("EdgeTamPromptEncoderConfig", _TINY_SAM2_HEADS["prompt_encoder_config"]),
        mask_decoder_config=Sub("EdgeTamMaskDecoderConfig", _TINY_SAM2_HEADS["mask_decoder_config"]),
    ),
)
EDGETAM_FULL = ConfigSpec("EdgeTamConfig", dict(vision_config=EDGETAM_VISION_FULL))


def sam2_processor(config: transformers.PretrainedConfig, tiny: bool) -> Any:
    """SAM 2's (and EdgeTAM's) image processor: resized to the square model input."""
    side = config.prompt_encoder_config.image_size
    mask_side = 4 * (side // config.prompt_encoder_config.patch_size)
    return transformers.Sam2ImageProcessor(
        size={"height": side, "width": side}, mask_size={"height": mask_side, "width": mask_side}
    )


# ------------------------------------------------------- SAM 2.1 video, EdgeTAM video (tracker)
# Tiny: the tiny SAM 2's Hiera (EdgeTAM: RepViT) at 64 px (16, 8 and 4 feature tokens a side); the
# decoder and memory widths are 128 and the memory 64 channels, because transformers' memory
# attention reads 64-channel memories (its image cross-attention's key width is fixed at 64) and
# splits object pointers into memory-width pieces only when they are wider than the memory.
_TINY_TRACKER = dict(
    prompt_encoder_config=dict(hidden_size=128, image_size=_TINY_SIDE, patch_size=16, mask_input_channels=8),
    mask_decoder_config=dict(hidden_size=128, mlp_dim=128, num_attention_heads=2, iou_head_hidden_dim=32),
    image_size=_TINY_SIDE, memory_attention_hidden_size=128, memory_attention_num_layers=1,
    memory_attention_rope_feat_sizes=[_TINY_SIDE // 16, _TINY_SIDE // 16], memory_encoder_hidden_size=128,
    memory_encoder_output_channels=64, mask_downsampler_embed_dim=128, memory_fuser_embed_dim=128,
    memory_fuser_intermediate_dim=64, memory_fuser_num_layers=1,
)
_TINY_TRACKER_VISION = {**_TINY_SAM2_VISION, "fpn_hidden_size": 128}
SAM2_VIDEO_TINY = ConfigSpec(
    "Sam2VideoConfig",
    dict(
        vision_config=Sub("Sam2VisionConfig", dict(backbone_config=_TINY_HIERA, **_TINY_TRACKER_VISION)),
        memory_attention_feed_forward_hidden_size=64,
        **_TINY_TRACKER,
    ),
)
# facebook/sam2.1-hiera-large: its Hiera-L image encoder, the config's memory defaults
SAM2_VIDEO_LARGE = ConfigSpec("Sam2VideoConfig", dict(vision_config=SAM2_LARGE_VISION))
# EdgeTAM's perceiver pools the 64-channel memory (4 x 4 tokens) into 8 latents and a 2 x 2 grid
EDGETAM_VIDEO_TINY = ConfigSpec(
    "EdgeTamVideoConfig",
    dict(
        vision_config=Sub("EdgeTamVisionConfig", dict(backbone_config=_TINY_REPVIT, **_TINY_TRACKER_VISION)),
        memory_attention_mlp_hidden_size=64, memory_attention_rope_k_sizes=[2, 2], perceiver_resampler_num_latents=8,
        perceiver_resampler_num_latents_2d=4, perceiver_resampler_hidden_size=64,
        perceiver_resampler_mlp_intermediate_size=64, perceiver_resampler_attention_head_dim=64,
        perceiver_resampler_num_layers=1, enable_temporal_pos_encoding_for_object_pointers=False,
        enable_occlusion_spatial_embedding=False, **_TINY_TRACKER,
    ),
)
EDGETAM_VIDEO_FULL = ConfigSpec(  # yonigozlan/EdgeTAM-hf (transformers' EdgeTAM video conversion script)
    "EdgeTamVideoConfig",
    dict(
        vision_config=EDGETAM_VISION_FULL,
        enable_temporal_pos_encoding_for_object_pointers=False,
        enable_occlusion_spatial_embedding=False,
    ),
)


def tracker_processor(config: transformers.PretrainedConfig, tiny: bool) -> Any:
    """The trackers' ``Sam2VideoProcessor``: the image processor prepares prompts, the video
    processor frames."""
    side = config.image_size
    mask_side = 4 * (side // config.prompt_encoder_config.patch_size)
    return transformers.Sam2VideoProcessor(
        image_processor=transformers.Sam2ImageProcessor(
            size={"height": side, "width": side}, mask_size={"height": mask_side, "width": mask_side}
        ),
        video_processor=transformers.Sam2VideoVideoProcessor(size={"height": side, "width": side}),
    )


def soften_tracker(model: nn.Module) -> None:
    """A random SAM 2 (or EdgeTAM) video model scores every object near logit 0 (±0.001), so
    whether a tracked object counts as present (logit > 0, else its mask is emptied) flips with
    rounding; a bias of 2 on its object-score head keeps tracked objects present, as a trained
    tracker keeps a visible object."""
    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(2.0)


# ----------------------------------------------------------------------------- OWLv2 (proposer)
OWLV2_TINY = ConfigSpec(
    "Owlv2Config",
    dict(
        text_config=dict(
            vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            bos_token_id=62, eos_token_id=63, pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=96,
            patch_size=16,
        ),
        projection_dim=16,
    ),
)
# google/owlv2-base-patch16-ensemble: ViT-B/16 at 960 px, CLIP text tower
OWLV2_BASE = ConfigSpec("Owlv2Config", dict(vision_config=dict(image_size=960, patch_size=16)))


def owlv2_processor(config: transformers.PretrainedConfig, tiny: bool) -> Any:
    side = config.vision_config.image_size
    return transformers.Owlv2ImageProcessor(size={"height": side, "width": side})


def soften_owlv2(model: nn.Module) -> None:
    """Tiny random OWLv2 saturates (objectness logits of ±100, boxes at the corners); shrink the
    last layer of its objectness and box heads so that objectness spreads over (0, 1) and boxes
    sit near their patch, which gives the tests something to threshold."""
    with torch.no_grad():
        for head in (model.objectness_head, model.box_head):
            head.dense2.weight.mul_(0.03)
            head.dense2.bias.mul_(0.03)


# ------------------------------------------------- GroundingDINO, MM-GroundingDINO (grounding model)
GROUNDING_DINO_TINY = ConfigSpec(
    "GroundingDinoConfig",
    dict(
        backbone_config=dict(
            model_type="swin", embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4, image_size=64,
            out_indices=[2, 3, 4],
        ),
        text_config=dict(
            model_type="bert", vocab_size=Computed(_bert_vocab_size), hidden_size=16, num_hidden_layers=1,
            num_attention_heads=2, intermediate_size=32,
        ),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=20, encoder_n_points=1, decoder_n_points=1,
    ),
)
# IDEA-Research/grounding-dino-tiny: Swin-T backbone, BERT-base text (the config's defaults)
GROUNDING_DINO_SWIN_T = ConfigSpec("GroundingDinoConfig")
MM_GROUNDING_DINO_TINY = ConfigSpec(  # the same sizes as the tiny GroundingDINO
    "MMGroundingDinoConfig",
    base=GROUNDING_DINO_TINY,
    inherit=(
        "backbone_config", "text_config", "d_model", "encoder_layers", "decoder_layers", "encoder_ffn_dim",
        "decoder_ffn_dim", "encoder_attention_heads", "decoder_attention_heads", "num_queries", "encoder_n_points",
        "decoder_n_points",
    ),
)
MM_GROUNDING_DINO_LARGE = ConfigSpec(  # openmmlab-community/mm_grounding_dino_large_all: Swin-L, BERT-base text
    "MMGroundingDinoConfig",
    dict(
        backbone_config=dict(
            model_type="swin", embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12,
            image_size=384, out_indices=[2, 3, 4],
        )
    ),
)


def grounding_processor(config: transformers.PretrainedConfig, tiny: bool) -> Any:
    """GroundingDINO's processor with the tiny BERT tokenizer. Tiny: 128 px keeps the coarsest
    feature level (stride 64) at 2 x 2 or more; at 64 px a square image left it 1 x 1, where
    GroupNorm has one value per channel and refuses."""
    image_size = {"shortest_edge": 128, "longest_edge": 192} if tiny else {"shortest_edge": 800, "longest_edge": 1333}
    return transformers.GroundingDinoProcessor(
        image_processor=transformers.GroundingDinoImageProcessor(size=image_size), tokenizer=tiny_bert_tokenizer()
    )


# -------------------------------------------------------------------- SAM 3 (concept segmenter)
_TINY_SAM3_LAYER = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64)
SAM3_TINY = ConfigSpec(
    "Sam3Config",
    dict(
        vision_config=Sub(
            "Sam3VisionConfig",
            dict(
                backbone_config=Sub(
                    "Sam3ViTConfig",
                    dict(
                        num_hidden_layers=2, image_size=56, patch_size=14, window_size=2, global_attn_indexes=[1],
                        **_TINY_SAM3_LAYER,
                    ),
                ),
                fpn_hidden_size=32,
                scale_factors=[2.0, 1.0],
            ),
        ),
        text_config=dict(
            vocab_size=Computed(_clip_vocab_size), hidden_size=32, intermediate_size=64, projection_dim=32,
            num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1,
            pad_token_id=1,
        ),
        geometry_encoder_config=Sub("Sam3GeometryEncoderConfig", dict(num_layers=1, **_TINY_SAM3_LAYER)),
        detr_encoder_config=Sub("Sam3DETREncoderConfig", dict(num_layers=1, **_TINY_SAM3_LAYER)),
        detr_decoder_config=Sub("Sam3DETRDecoderConfig", dict(num_layers=1, num_queries=8, **_TINY_SAM3_LAYER)),
        mask_decoder_config=Sub("Sam3MaskDecoderConfig", dict(hidden_size=32, num_upsampling_stages=2)),
    ),
)
SAM3_FULL = ConfigSpec("Sam3Config")  # facebook/sam3: the config's defaults


def sam3_processor(config: transformers.PretrainedConfig, tiny: bool) -> Any:
    side = config.vision_config.backbone_config.image_size
    return transformers.Sam3Processor(
        image_processor=transformers.Sam3ImageProcessor(size={"height": side, "width": side}),
        tokenizer=tiny_clip_tokenizer(),
    )


# ---------------------------------------------------------------------------- PE-AV (binder)
# PE-AV's tiny towers: a 1-layer transformer over a tiny DAC codec (audio) and a tiny timm PE ViT (video)
_TINY_PE_ENCODER = dict(
    hidden_size=32, intermediate_size=40, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
    head_dim=16, max_position_embeddings=512,
)
_TINY_PE_VIDEO_SIDE = 14
_TINY_PE_AUDIO = dict(
    dac_config=dict(
        encoder_hidden_size=8, downsampling_ratios=[2, 4, 4], decoder_hidden_size=8, n_codebooks=2, codebook_size=16,
        codebook_dim=8,
    ),
    **_TINY_PE_ENCODER,
)
_TINY_PE_VIDEO = dict(
    vision_config=dict(
        architecture="vit_pe_core_large_patch14_336",
        model_args=dict(embed_dim=32, img_size=(_TINY_PE_VIDEO_SIDE, _TINY_PE_VIDEO_SIDE), depth=1, num_heads=2),
        num_classes=4,
    ),
    **_TINY_PE_ENCODER,
)
PE_AUDIO_VIDEO_TINY = ConfigSpec(
    "PeAudioVideoConfig",
    dict(
        text_config=dict(
            vocab_size=Computed(_bert_vocab_size), hidden_size=32, intermediate_size=40, num_hidden_layers=1,
            num_attention_heads=2, pad_token_id=0, bos_token_id=101, eos_token_id=102, cls_token_id=101,
            sep_token_id=102,
        ),
        audio_video_config=dict(audio_config=_TINY_PE_AUDIO, video_config=_TINY_PE_VIDEO, **_TINY_PE_ENCODER),
    ),
)
PE_AUDIO_VIDEO_LARGE = ConfigSpec("PeAudioVideoConfig")  # facebook/pe-av-large: the config's defaults


def pe_audio_video_processor(config: transformers.PretrainedConfig, tiny: bool) -> Any:
    side = _TINY_PE_VIDEO_SIDE if tiny else 336
    hop = config.audio_video_config.audio_config.dac_config.hop_length
    return transformers.PeAudioVideoProcessor(
        feature_extractor=transformers.PeAudioFeatureExtractor(sampling_rate=48_000, hop_length=hop),
        video_processor=transformers.PeVideoVideoProcessor(
            size={"height": side, "width": side}, do_resize=True, do_rescale=True, do_normalize=True,
            image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        ),
        tokenizer=tiny_bert_tokenizer(),
    )


def soften_pe_audio_video(model: nn.Module) -> None:
    """Random PE-AV starts with a zero audio-video logit scale (every match probability exactly
    0.5, whatever the inputs); give it a scale of 10 (bias 0) so that the calibrated scores
    differ between proposals (around 0.5 for random towers)."""
    with torch.no_grad():
        model.audio_video_logit_scale.fill_(10.0)
        model.audio_video_logit_bias.fill_(0.0)
