"""Models with seeded random weights, built in code: the ``tiny`` preset (CPU tests, smoke runs)
and ``paper-random`` (the paper checkpoints' architectures, for speed benchmarks).

For each Hugging Face component a config (:func:`random_config`) and a processor built without a
download (:func:`random_processor`); :func:`build_random` draws the weights from a fixed seed per
component (:data:`SEEDS`) without touching the caller's random state, so a preset is
deterministic whatever order its components are first used in. GroundingDINO's random presets
get a small character-level BERT tokenizer built in code (:func:`tiny_bert_tokenizer`).
"""

from __future__ import annotations

import string
from typing import Any, Callable

import torch
import transformers as tf
from torch import nn

from cmsf.io.audioset import audioset_labels

# One fixed seed per component: random presets are deterministic and independent of the order
# in which components are first used.
SEEDS = {"ast": 1001, "grounding_dino": 1002, "sam": 1003, "owlv2": 1004, "imagebind": 1005, "mavl": 1006}

TINY_IMAGEBIND_SIZES = dict(
    vision_embed_dim=32,
    vision_num_blocks=1,
    vision_num_heads=2,
    audio_embed_dim=32,
    audio_num_blocks=1,
    audio_num_heads=2,
    text_embed_dim=32,
    text_num_blocks=1,
    text_num_heads=2,
    out_embed_dim=16,
)
HUGE_IMAGEBIND_SIZES = dict(
    vision_embed_dim=1280,
    vision_num_blocks=32,
    vision_num_heads=16,
    audio_embed_dim=768,
    audio_num_blocks=12,
    audio_num_heads=12,
    text_embed_dim=1024,
    text_num_blocks=24,
    text_num_heads=16,
    out_embed_dim=1024,
)

# GroundingDINO (HF) splits phrases at these BERT-uncased token ids: [CLS], [SEP], ".", "?".
BERT_CLS, BERT_SEP, BERT_DOT, BERT_QUESTION = 101, 102, 1012, 1029


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
    vocab.update({"[UNK]": 100, "[CLS]": BERT_CLS, "[SEP]": BERT_SEP, "[MASK]": 103})
    next_id = 104
    for piece in pieces + ["##" + p for p in pieces]:
        vocab[piece] = next_id
        next_id += 1
    for i in range(next_id, BERT_QUESTION + 1):
        vocab[f"[unused{i}]"] = i
    vocab["."] = BERT_DOT
    vocab["?"] = BERT_QUESTION
    del vocab[f"[unused{BERT_DOT}]"], vocab[f"[unused{BERT_QUESTION}]"]
    return vocab


def tiny_bert_tokenizer() -> tf.BertTokenizer:
    """A BERT WordPiece tokenizer built in code (no download), see :func:`tiny_bert_vocab`."""
    return tf.BertTokenizer(vocab=tiny_bert_vocab(), do_lower_case=True)


def random_config(name: str, size: str) -> tf.PretrainedConfig:
    """The config of a randomly initialised component: ``size="tiny"`` (CPU tests) or
    ``"paper"`` (the paper checkpoints' architectures)."""
    tiny = size == "tiny"
    if name == "ast":
        labels = audioset_labels()
        extra = dict(id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
        if not tiny:  # ASTConfig defaults are MIT/ast-finetuned-audioset-10-10-0.4593's
            return tf.ASTConfig(**extra)
        return tf.ASTConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            frequency_stride=16,
            time_stride=16,
            max_length=1024,
            num_mel_bins=128,
            **extra,
        )
    if name == "sam":
        if not tiny:  # facebook/sam-vit-huge
            return tf.SamConfig(
                vision_config=dict(
                    hidden_size=1280,
                    num_hidden_layers=32,
                    num_attention_heads=16,
                    global_attn_indexes=[7, 15, 23, 31],
                    mlp_dim=5120,
                )
            )
        return tf.SamConfig(
            vision_config=dict(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=64,
                patch_size=16,
                window_size=2,
                global_attn_indexes=[1],
                output_channels=32,
                num_pos_feats=16,
                mlp_dim=64,
                initializer_range=0.02,  # SAM's 1e-10 makes denormal floats, very slow on CPU
            ),
            prompt_encoder_config=dict(hidden_size=32, image_size=64, patch_size=16, mask_input_channels=8),
            mask_decoder_config=dict(
                hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=32
            ),
            # a wider init than SAM's 0.02, so that the tiny decoder's mask logits (std ~3) and IoU
            # predictions spread out: the tests threshold them
            initializer_range=0.3,
        )
    if name == "owlv2":
        if not tiny:  # google/owlv2-base-patch16-ensemble: ViT-B/16 at 960 px, CLIP text tower
            return tf.Owlv2Config(vision_config=dict(image_size=960, patch_size=16))
        return tf.Owlv2Config(
            text_config=dict(
                vocab_size=64,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                bos_token_id=62,
                eos_token_id=63,
                pad_token_id=0,
            ),
            vision_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=96,
                patch_size=16,
            ),
            projection_dim=16,
        )
    if name == "grounding_dino":
        if not tiny:  # IDEA-Research/grounding-dino-tiny: Swin-T backbone, BERT-base text
            return tf.GroundingDinoConfig()
        return tf.GroundingDinoConfig(
            backbone_config=dict(
                model_type="swin",
                embed_dim=8,
                depths=[1, 1, 1, 1],
                num_heads=[1, 1, 1, 1],
                window_size=4,
                image_size=64,
                out_indices=[2, 3, 4],
            ),
            text_config=dict(
                model_type="bert",
                vocab_size=len(tiny_bert_vocab()),
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=32,
            ),
            d_model=32,
            encoder_layers=1,
            decoder_layers=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            num_queries=20,
            encoder_n_points=1,
            decoder_n_points=1,
        )
    raise AssertionError(name)  # pragma: no cover


def random_processor(name: str, size: str, config: tf.PretrainedConfig) -> Any:
    """Processors built in code (no download) that match the component's config."""
    tiny = size == "tiny"
    if name == "ast":
        return tf.ASTFeatureExtractor(num_mel_bins=config.num_mel_bins, max_length=config.max_length)
    if name == "sam":
        side = config.vision_config.image_size
        mask_side = config.prompt_encoder_config.image_embedding_size * 4
        return tf.SamImageProcessor(
            size={"longest_edge": side},
            pad_size={"height": side, "width": side},
            mask_size={"longest_edge": mask_side},
            mask_pad_size={"height": mask_side, "width": mask_side},
        )
    if name == "owlv2":
        side = config.vision_config.image_size
        return tf.Owlv2ImageProcessor(size={"height": side, "width": side})
    if name == "grounding_dino":
        # tiny: 128 px keeps the coarsest feature level (stride 64) at 2 x 2 or more; at 64 px a
        # square image left it 1 x 1, where GroupNorm has one value per channel and refuses
        image_size = {"shortest_edge": 128, "longest_edge": 192} if tiny else {"shortest_edge": 800, "longest_edge": 1333}
        return tf.GroundingDinoProcessor(
            image_processor=tf.GroundingDinoImageProcessor(size=image_size), tokenizer=tiny_bert_tokenizer()
        )
    raise AssertionError(name)  # pragma: no cover


def _forked_rng(device: torch.device) -> Any:
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    return torch.random.fork_rng(devices=devices)


def build_random(build: Callable[[], nn.Module], seed: int, device: torch.device) -> nn.Module:
    """Build a module with weights drawn from ``seed``, on ``device``, without touching the
    caller's random state."""
    with _forked_rng(device):
        torch.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        with torch.device(device):
            return build()


def soften_tiny(name: str, model: nn.Module) -> None:
    """Tiny random OWLv2 saturates (objectness logits of ±100, boxes at the corners); shrink the
    last layer of its objectness and box heads so that objectness spreads over (0, 1) and boxes
    sit near their patch, which gives the tests something to threshold."""
    if name == "owlv2":
        with torch.no_grad():
            for head in (model.objectness_head, model.box_head):
                head.dense2.weight.mul_(0.03)
                head.dense2.bias.mul_(0.03)
