"""The loaded foundation models and the four model-backed stages of cmsf.

Loading
    :func:`load_models` returns a :class:`Models`: the audio tagger (AST), the open-vocabulary
    detector (GroundingDINO), the segmenter (SAM), the class-agnostic proposer (OWLv2) and
    ImageBind. Each component is loaded on first use and then kept, so a pipeline that never
    grounds text never loads GroundingDINO, and one ``Models`` serves every frame and video.

Stages (pure functions; the models are an argument, never a global)
    :func:`tag_audio`      audio segments → AudioSet tags with probabilities (AST)
    :func:`ground`         images + text prompts → boxes, scores, phrases (GroundingDINO)
    :func:`propose_boxes`  images → class-agnostic boxes with objectness (OWLv2)
    :func:`sam_masks`      images (+ boxes) → masks (SAM; automatic point-grid masks without boxes)

Conventions (as in the rest of cmsf): images are a list of ``Tensor[3, H, W]`` uint8 or PIL
images, or one ``Tensor[B, 3, H, W]`` uint8; boxes are ``Tensor[K, 4]`` float32 in pixel
(x1, y1, x2, y2) of the image they belong to, in continuous coordinates (pixel ``i`` covers
``[i, i + 1)``); masks are bool at the image's own resolution. Every stage runs its model under
``torch.inference_mode()`` on ``models.device`` in ``models.dtype`` and returns tensors on
``models.device`` (scores and boxes in float32).
"""

from __future__ import annotations

import importlib
import math
import os
import string
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmsf import media
from cmsf.media import Images, Waveforms
from cmsf.ops import check_boxes, nms

__all__ = [
    "AUDIOSET_NUM_LABELS",
    "COMPONENTS",
    "PAPER_SOURCES",
    "PRESETS",
    "Component",
    "Detections",
    "MaskSet",
    "ModelLoadError",
    "Models",
    "Proposals",
    "audio_tag_probabilities",
    "audioset_labels",
    "ground",
    "load_models",
    "propose_boxes",
    "sam_masks",
    "tag_audio",
]

PRESETS = ("paper", "tiny", "paper-random")
"""Known presets of :func:`load_models`."""

COMPONENTS = ("ast", "grounding_dino", "sam", "owlv2", "imagebind")
"""Component names, as used by :class:`Models` properties and :func:`load_models` overrides."""

PAPER_SOURCES: Mapping[str, Optional[str]] = {
    "ast": "MIT/ast-finetuned-audioset-10-10-0.4593",
    "grounding_dino": "IDEA-Research/grounding-dino-tiny",
    "sam": "facebook/sam-vit-huge",
    "owlv2": "google/owlv2-base-patch16-ensemble",
    "imagebind": None,  # None: the official imagebind_huge checkpoint (see cmsf.imagebind.load_imagebind)
}
"""The checkpoints of the ``"paper"`` preset (Hugging Face hub ids; ImageBind: official download)."""

AUDIOSET_NUM_LABELS = 527

_COMPONENT_TITLES = {
    "ast": "AST audio tagger",
    "grounding_dino": "GroundingDINO detector",
    "sam": "SAM segmenter",
    "owlv2": "OWLv2 proposer",
    "imagebind": "ImageBind",
}

# One fixed seed per component: random presets are deterministic and independent of the order
# in which components are first used.
_SEEDS = {"ast": 1001, "grounding_dino": 1002, "sam": 1003, "owlv2": 1004, "imagebind": 1005}

_TINY_IMAGEBIND_SIZES = dict(
    vision_embed_dim=32,
    vision_num_blocks=1,
    vision_num_heads=2,
    audio_embed_dim=32,
    audio_num_blocks=1,
    audio_num_heads=2,
    out_embed_dim=16,
)
_HUGE_IMAGEBIND_SIZES = dict(
    vision_embed_dim=1280,
    vision_num_blocks=32,
    vision_num_heads=16,
    audio_embed_dim=768,
    audio_num_blocks=12,
    audio_num_heads=12,
    out_embed_dim=1024,
)

# GroundingDINO (HF) splits phrases at these BERT-uncased token ids: [CLS], [SEP], ".", "?".
_BERT_CLS, _BERT_SEP, _BERT_DOT, _BERT_QUESTION = 101, 102, 1012, 1029


class ModelLoadError(RuntimeError):
    """A component could not be loaded; the message names the component, its source, and how
    to make it available."""


class Component(NamedTuple):
    """One loaded Hugging Face component: the model (eval mode, on ``Models.device`` in
    ``Models.dtype``) and the processor that prepares its inputs."""

    model: nn.Module
    processor: Any


# --------------------------------------------------------------------------------------------
# AudioSet labels
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _audioset_labels() -> tuple[str, ...]:
    text = resources.files("cmsf").joinpath("data/audioset_labels.txt").read_text(encoding="utf-8")
    labels = tuple(line for line in text.splitlines() if line)
    if len(labels) != AUDIOSET_NUM_LABELS:  # pragma: no cover - guards the shipped file
        raise RuntimeError(f"cmsf/data/audioset_labels.txt: expected {AUDIOSET_NUM_LABELS} labels, got {len(labels)}")
    return labels


def audioset_labels() -> list[str]:
    """The 527 AudioSet class names in class-index order (``class_labels_indices.csv``:
    index 0 ``"Speech"`` … index 526 ``"Field recording"``), as AST's ``id2label`` has them."""
    return list(_audioset_labels())


# --------------------------------------------------------------------------------------------
# Component specifications and builders
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """Where a component comes from: ``kind`` is ``"pretrained"`` (``source`` is a hub id, a
    local directory, or for ImageBind a checkpoint path / None for the official download) or
    ``"random"`` (``size`` is ``"tiny"`` or ``"paper"``; ImageBind: ``sizes``)."""

    kind: str
    source: Optional[str] = None
    size: Optional[str] = None
    sizes: Optional[tuple[tuple[str, int], ...]] = None

    def describe(self) -> str:
        if self.kind == "random":
            if self.sizes is not None:
                return f"random weights, sizes {dict(self.sizes)}"
            return f"random weights, {self.size} config"
        return "official ImageBind checkpoint" if self.source is None else repr(self.source)


def _preset_specs(preset: str) -> dict[str, _Spec]:
    if preset == "paper":
        return {name: _Spec("pretrained", source) for name, source in PAPER_SOURCES.items()}
    size = "tiny" if preset == "tiny" else "paper"
    specs = {name: _Spec("random", size=size) for name in COMPONENTS if name != "imagebind"}
    sizes = _TINY_IMAGEBIND_SIZES if preset == "tiny" else _HUGE_IMAGEBIND_SIZES
    specs["imagebind"] = _Spec("random", sizes=tuple(sizes.items()))
    return specs


def _override_spec(name: str, value: Any) -> _Spec:
    if name == "imagebind":
        if value is None:
            return _Spec("pretrained", None)
        if isinstance(value, Mapping):
            return _Spec("random", sizes=tuple(dict(value).items()))
    if isinstance(value, (str, os.PathLike)):
        source = os.fspath(value)
        if not source:
            raise ValueError(f"{name}: expected a hub id or a local path, got an empty string")
        return _Spec("pretrained", source)
    expected = "a hub id or a local directory (str or path)"
    if name == "imagebind":
        expected = "a checkpoint path, None (official download), or a dict of ImageBind sizes"
    raise ValueError(f"{name}: expected {expected}, got {type(value).__name__}")


def _tiny_bert_vocab() -> dict[str, int]:
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


def _tiny_bert_tokenizer():
    """A BERT WordPiece tokenizer built in code (no download), see :func:`_tiny_bert_vocab`."""
    from transformers import BertTokenizer

    return BertTokenizer(vocab=_tiny_bert_vocab(), do_lower_case=True)


def _random_config(name: str, size: str):
    """The config of a randomly initialised component: ``size="tiny"`` (CPU tests) or
    ``"paper"`` (the paper checkpoints' architectures)."""
    import transformers as tf

    tiny = size == "tiny"
    if name == "ast":
        labels = _audioset_labels()
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
                vocab_size=len(_tiny_bert_vocab()),
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


def _random_processor(name: str, size: str, config) -> Any:
    """Processors built in code (no download) that match the component's config."""
    import transformers as tf

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
            image_processor=tf.GroundingDinoImageProcessor(size=image_size), tokenizer=_tiny_bert_tokenizer()
        )
    raise AssertionError(name)  # pragma: no cover


_MODEL_CLASSES = {
    "ast": "ASTForAudioClassification",
    "grounding_dino": "GroundingDinoForObjectDetection",
    "sam": "SamModel",
    "owlv2": "Owlv2ForObjectDetection",
}


def _pretrained_processor(name: str, source: str) -> Any:
    import transformers as tf

    if name == "ast":
        return tf.ASTFeatureExtractor.from_pretrained(source)
    if name == "sam":
        return tf.SamImageProcessor.from_pretrained(source)
    if name == "owlv2":
        return tf.Owlv2ImageProcessor.from_pretrained(source)
    if name == "grounding_dino":
        return tf.GroundingDinoProcessor(
            image_processor=tf.GroundingDinoImageProcessor.from_pretrained(source),
            tokenizer=tf.AutoTokenizer.from_pretrained(source),
        )
    raise AssertionError(name)  # pragma: no cover


def _seeded(device: torch.device, seed: int):
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    return torch.random.fork_rng(devices=devices)


def _build_random(build: Callable[[], nn.Module], seed: int, device: torch.device) -> nn.Module:
    """Build a module with weights drawn from ``seed``, on ``device``, without touching the
    caller's random state."""
    with _seeded(device, seed):
        torch.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        with torch.device(device):
            return build()


def _soften_tiny(name: str, model: nn.Module) -> None:
    """Tiny random OWLv2 saturates (objectness logits of ±100, boxes at the corners); shrink the
    last layer of its objectness and box heads so that objectness spreads over (0, 1) and boxes
    sit near their patch, which gives the tests something to threshold."""
    if name == "owlv2":
        with torch.no_grad():
            for head in (model.objectness_head, model.box_head):
                head.dense2.weight.mul_(0.03)
                head.dense2.bias.mul_(0.03)


def _load_error(name: str, spec: _Spec, error: BaseException) -> ModelLoadError:
    title = _COMPONENT_TITLES[name]
    if name == "imagebind":
        how = (
            "pass a local checkpoint: load_models(..., imagebind='/path/to/imagebind_huge.pth'), or run once "
            "with internet access so that the official checkpoint is downloaded and cached"
        )
    else:
        how = (
            "run once with internet access so that it is cached by Hugging Face (the cache lives under "
            "HF_HOME, default ~/.cache/huggingface), set HF_HOME to a cache that already holds it, or pass a "
            f"local directory saved with save_pretrained (model and processor): load_models(..., {name}='/path/to/dir')"
        )
    return ModelLoadError(
        f"could not load the {title} (component {name!r}) from {spec.describe()}: "
        f"{type(error).__name__}: {error}. To get it: {how}."
    )


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    """``device`` as a ``torch.device``: CUDA when available if ``None``. A CUDA device that this
    machine does not have is a ``ValueError`` now, not a driver error at the first model."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device: expected a torch device such as 'cpu' or 'cuda:0', got {device!r}") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} asked for, but CUDA is not available on this machine (use 'cpu')")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device: {device!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return resolved


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_dtype(dtype: Union[str, torch.dtype, None]) -> torch.dtype:
    """``dtype`` as ``torch.float32`` (the default, for ``None``) or ``torch.bfloat16``; the
    strings ``"float32"``/``"bfloat16"`` are accepted; anything else is a ``ValueError``."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in (torch.float32, torch.bfloat16):
        return dtype
    if isinstance(dtype, str) and dtype.lower().removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.lower().removeprefix("torch.")]
    raise ValueError(f"dtype: expected torch.float32 or torch.bfloat16 (or 'float32' / 'bfloat16'), got {dtype!r}")


class Models:
    """The foundation models of cmsf, each loaded on first use and then kept.

    Create with :func:`load_models`. Components (properties; the first access loads):

    - ``ast``: :class:`Component` (``ASTForAudioClassification``, ``ASTFeatureExtractor``)
    - ``grounding_dino``: :class:`Component` (``GroundingDinoForObjectDetection``,
      ``GroundingDinoProcessor``)
    - ``sam``: :class:`Component` (``SamModel``, ``SamImageProcessor``)
    - ``owlv2``: :class:`Component` (``Owlv2ForObjectDetection``, ``Owlv2ImageProcessor``; only
      the vision tower and the objectness and box heads are used)
    - ``imagebind``: the ``cmsf.imagebind.ImageBind`` module itself

    Every model is in eval mode on :attr:`device` in :attr:`dtype`. :attr:`loaded` lists the
    components loaded so far. A component that cannot be loaded raises :class:`ModelLoadError`
    at its first access.
    """

    def __init__(self, specs: Mapping[str, _Spec], device: torch.device, dtype: torch.dtype, preset: str) -> None:
        self._specs = dict(specs)
        self._device = device
        self._dtype = dtype
        self._preset = preset
        self._loaded: dict[str, Any] = {}

    @property
    def device(self) -> torch.device:
        """Where every model lives and where the stages return their tensors."""
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        """The models' parameter dtype: ``torch.float32`` or ``torch.bfloat16``."""
        return self._dtype

    @property
    def preset(self) -> str:
        return self._preset

    @property
    def loaded(self) -> tuple[str, ...]:
        """Names of the components loaded so far, in load order."""
        return tuple(self._loaded)

    def source(self, name: str) -> str:
        """A description of where component ``name`` comes from (hub id, path, or random)."""
        return self._specs[self._check_name(name)].describe()

    @property
    def ast(self) -> Component:
        return self.get("ast")

    @property
    def grounding_dino(self) -> Component:
        return self.get("grounding_dino")

    @property
    def sam(self) -> Component:
        return self.get("sam")

    @property
    def owlv2(self) -> Component:
        return self.get("owlv2")

    @property
    def imagebind(self) -> nn.Module:
        return self.get("imagebind")

    def get(self, name: str) -> Any:
        """Component ``name`` (one of :data:`COMPONENTS`), loading it on first use."""
        name = self._check_name(name)
        if name not in self._loaded:
            with torch.inference_mode(False):
                self._loaded[name] = self._load(name)
        return self._loaded[name]

    def load(self, *names: str) -> "Models":
        """Load the named components now (all of them when none is named); returns ``self``.
        Useful to keep loading time out of a benchmark."""
        for name in names or COMPONENTS:
            self.get(name)
        return self

    def _check_name(self, name: str) -> str:
        if name not in COMPONENTS:
            raise ValueError(f"name: expected one of {COMPONENTS}, got {name!r}")
        return name

    def _finish(self, model: nn.Module) -> nn.Module:
        model = model.to(device=self._device, dtype=self._dtype)
        model.eval()
        model.requires_grad_(False)
        return model

    def _load(self, name: str) -> Any:
        spec = self._specs[name]
        if name == "imagebind":
            return self._load_imagebind(spec)
        import transformers as tf

        model_class = getattr(tf, _MODEL_CLASSES[name])
        if spec.kind == "random":
            config = _random_config(name, spec.size)
            model = _build_random(lambda: model_class(config), _SEEDS[name], self._device)
            if spec.size == "tiny":
                _soften_tiny(name, model)
            return Component(self._finish(model), _random_processor(name, spec.size, config))
        try:
            model = model_class.from_pretrained(spec.source, dtype=self._dtype)
            processor = _pretrained_processor(name, spec.source)
        except Exception as error:  # noqa: BLE001 - every failure becomes one clear error
            raise _load_error(name, spec, error) from error
        return Component(self._finish(model), processor)

    def _load_imagebind(self, spec: _Spec) -> nn.Module:
        try:
            imagebind_module = importlib.import_module("cmsf.imagebind")
        except ImportError as error:
            raise ModelLoadError(
                f"could not load ImageBind (component 'imagebind'): cmsf.imagebind cannot be imported "
                f"({type(error).__name__}: {error})"
            ) from error
        if spec.kind == "random":
            sizes = dict(spec.sizes or ())
            model = _build_random(lambda: imagebind_module.ImageBind(**sizes), _SEEDS["imagebind"], self._device)
            return self._finish(model)
        try:
            model = imagebind_module.load_imagebind(spec.source, device=self._device, dtype=self._dtype)
        except Exception as error:  # noqa: BLE001
            raise _load_error("imagebind", spec, error) from error
        return self._finish(model)

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{name}={self._specs[name].describe()}{' (loaded)' if name in self._loaded else ''}" for name in COMPONENTS
        )
        return f"Models(preset={self._preset!r}, device={str(self._device)!r}, dtype={self._dtype}, {parts})"


def load_models(
    preset: str = "paper",
    device: Union[str, torch.device, None] = None,
    dtype: Union[str, torch.dtype, None] = None,
    **overrides: Any,
) -> Models:
    """The foundation models of a preset, loaded lazily (nothing is loaded until first use).

    Args:
        preset: ``"paper"``: the paper's checkpoints (:data:`PAPER_SOURCES`) from the Hugging
            Face hub, cached as transformers caches them (``HF_HOME``); ImageBind's official
            ``imagebind_huge`` checkpoint. ``"tiny"``: the same model classes built from tiny
            configs with seeded random weights and processors built in code: no download,
            deterministic, for tests (AST keeps the 527 AudioSet label names).
            ``"paper-random"``: the paper's full architectures (AST base, GroundingDINO Swin-T +
            BERT-base, SAM ViT-H, OWLv2 B/16 at 960 px, ImageBind huge) with seeded random weights
            and no download, for speed benchmarks. GroundingDINO of both random presets uses a
            small character-level WordPiece tokenizer built in code, so prompts take more tokens
            than with BERT's real vocabulary.
        device: where the models run; default CUDA when available, else CPU.
        dtype: ``torch.float32`` (default) or ``torch.bfloat16`` (or the strings
            ``"float32"``/``"bfloat16"``); anything else is a ``ValueError``.
        **overrides: per component (``ast``, ``grounding_dino``, ``sam``, ``owlv2``,
            ``imagebind``), a hub id or a local directory saved with ``save_pretrained`` (the
            model and its processor, loaded with ``from_pretrained``), e.g.
            ``load_models("paper", sam="facebook/sam-vit-base")``. For ``imagebind``: a
            checkpoint path, ``None`` for the official download, or a dict of ``ImageBind``
            sizes to build with seeded random weights.

    Raises:
        ValueError: unknown preset or component, bad device, or a dtype other than float32 /
            bfloat16. (:class:`ModelLoadError` is raised later, when a component that cannot be
            loaded is first used.)
    """
    if preset not in PRESETS:
        raise ValueError(f"preset: expected one of {PRESETS}, got {preset!r}")
    unknown = sorted(set(overrides) - set(COMPONENTS))
    if unknown:
        raise ValueError(f"unknown component(s) {unknown}: expected overrides among {COMPONENTS}")
    specs = _preset_specs(preset)
    for name, value in overrides.items():
        specs[name] = _override_spec(name, value)
    return Models(specs, resolve_device(device), resolve_dtype(dtype), preset)


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def _check_unit(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= float(value) <= 1.0):
        raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
    return float(value)


def _check_finite(value: Any, name: str, minimum: Optional[float] = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected a number ≥ {minimum:g}, got {value!r}")
    return float(value)


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return value


def _check_models(models: Any) -> Models:
    if not isinstance(models, Models):
        raise ValueError(f"models: expected a cmsf.models.Models (see load_models), got {type(models).__name__}")
    return models


# --------------------------------------------------------------------------------------------
# Audio tagging (AST)
# --------------------------------------------------------------------------------------------

_MIN_FBANK_SAMPLES = 400  # one 25 ms Kaldi window at 16 kHz


def audio_tag_probabilities(waveforms: Waveforms, sample_rate: int, models: Models) -> Tensor:
    """AST's sigmoid probabilities of every AudioSet class for a batch of audio segments.

    Args:
        waveforms: a list of ``Tensor[C, S]`` / ``Tensor[S]`` float, or one ``Tensor[B, C, S]``
            / ``Tensor[B, S]``; any channel count, segments may differ in length.
        sample_rate: of the waveforms, in Hz (> 0).
        models: the loaded models (uses ``models.ast``).

    Returns:
        ``Tensor[B, L]`` float32 on ``models.device`` (L = 527 for AudioSet AST), column ``j``
        is ``models.ast.model.config.id2label[j]``.

    Each segment is mixed down to mono (channel mean), resampled to the feature extractor's
    rate (16 kHz), zero-padded to at least 400 samples (one 25 ms analysis window), turned into
    AST's log-Mel filterbank and padded or truncated to the extractor's ``max_length`` frames
    (1024 frames = 10.24 s), then all segments go through AST in one batched forward.
    """
    models = _check_models(models)
    segments = media.as_waveform_list(waveforms)
    sample_rate = media.check_sample_rate(sample_rate)
    model, extractor = models.ast
    target_rate = int(extractor.sampling_rate)
    mono = []
    for waveform in segments:
        signal = media.resample(media.mixdown(waveform.detach().float().cpu()), sample_rate, target_rate)
        if signal.shape[-1] < _MIN_FBANK_SAMPLES:
            signal = F.pad(signal, (0, _MIN_FBANK_SAMPLES - signal.shape[-1]))
        mono.append(signal.to(torch.float32).numpy())
    with torch.inference_mode():
        features = extractor(mono, sampling_rate=target_rate, return_tensors="pt")["input_values"]
        logits = model(input_values=features.to(device=models.device, dtype=models.dtype)).logits
        return torch.sigmoid(logits.float())


def tag_audio(
    waveforms: Waveforms,
    sample_rate: int,
    models: Models,
    threshold: float = 0.5,
) -> list[list[tuple[str, float]]]:
    """AudioSet tags of each audio segment (the AT step of AT-GDINO-SAM).

    Args:
        waveforms: a list of ``Tensor[C, S]`` / ``Tensor[S]`` float, or one ``Tensor[B, C, S]``
            / ``Tensor[B, S]`` (see :func:`audio_tag_probabilities` for the preprocessing).
        sample_rate: of the waveforms, in Hz (> 0).
        models: the loaded models (uses ``models.ast``).
        threshold: keep labels whose sigmoid probability is ≥ ``threshold`` (τ_AT, 0.5 in the
            paper), in [0, 1].

    Returns:
        per segment, a list of ``(label, probability)``: the AudioSet label names (strings as in
        AST's ``id2label``) with probability ≥ threshold, most probable first (ties: lower class
        index first). A higher threshold gives a subset.
    """
    threshold = _check_unit(threshold, "threshold")
    probabilities = audio_tag_probabilities(waveforms, sample_rate, models).cpu()
    id2label = models.ast.model.config.id2label
    tags: list[list[tuple[str, float]]] = []
    for row in probabilities:
        order = torch.sort(row, descending=True, stable=True).indices
        tags.append([(str(id2label[int(j)]), float(row[j])) for j in order.tolist() if row[j] >= threshold])
    return tags


# --------------------------------------------------------------------------------------------
# Open-vocabulary grounding (GroundingDINO)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detections:
    """Detections in one image.

    Attributes:
        boxes: ``Tensor[K, 4]`` float32, pixel (x1, y1, x2, y2) of the image, clipped to it.
        scores: ``Tensor[K]`` float32 in [0, 1], highest first.
        labels: ``K`` prompts, per box the prompt (as cleaned by :func:`ground`: lowercase,
            no ".") that contains the box's most probable token.
        phrases: ``K`` phrases as GroundingDINO matches them: the decoded prompt tokens whose
            probability exceeds ``text_threshold`` (may be part of a prompt, span several, or be
            ``""``).
        prompt_indices: ``Tensor[K]`` int64, per box the index of ``labels[k]`` in this image's
            prompts.
    """

    boxes: Tensor
    scores: Tensor
    labels: list[str]
    phrases: list[str]
    prompt_indices: Tensor

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def _clean_prompt(prompt: Any, name: str) -> str:
    """GroundingDINO's prompt convention: lowercase phrases separated by ". ". The phrase
    delimiters "." and "?" cannot occur inside a phrase and are replaced by spaces (AudioSet's
    "Bee, wasp, etc." becomes "bee, wasp, etc"); whitespace is collapsed."""
    if not isinstance(prompt, str):
        raise ValueError(f"{name}: expected a string, got {type(prompt).__name__}")
    cleaned = " ".join(prompt.lower().replace(".", " ").replace("?", " ").split())
    if not cleaned:
        raise ValueError(f"{name}: empty prompt {prompt!r}")
    return cleaned


def _prompt_lists(prompts: Any, count: int) -> list[list[str]]:
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
        raise ValueError(
            "prompts: expected a list of strings (the same prompts for every image) or a list with one "
            f"list of strings per image, got {type(prompts).__name__}"
        )
    if all(isinstance(p, str) for p in prompts):
        shared = [_clean_prompt(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
        return [list(shared) for _ in range(count)]
    if not all(isinstance(p, (list, tuple)) for p in prompts):
        raise ValueError("prompts: expected a list of strings or a list of lists of strings, not a mixture")
    if len(prompts) != count:
        raise ValueError(f"prompts: expected one list of prompts per image ({count}), got {len(prompts)} lists")
    return [[_clean_prompt(p, f"prompts[{i}][{j}]") for j, p in enumerate(per)] for i, per in enumerate(prompts)]


def _chunk_prompts(phrases: list[str], tokenizer, max_tokens: int) -> list[tuple[int, list[str]]]:
    """Greedily split ``phrases`` into consecutive groups whose prompt "p1. p2. … pn." fits in
    ``max_tokens`` tokens with [CLS] and [SEP]. Returns ``(index of first phrase, group)``."""
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in phrases]
    groups: list[tuple[int, list[str]]] = []
    start, used = 0, 2
    for i, (phrase, length) in enumerate(zip(phrases, lengths)):
        if length + 3 > max_tokens:
            raise ValueError(f"prompts: {phrase!r} takes {length} tokens, more than GroundingDINO's {max_tokens - 3}")
        if i > start and used + length + 1 > max_tokens:
            groups.append((start, phrases[start:i]))
            start, used = i, 2
        used += length + 1
    if phrases:
        groups.append((start, phrases[start:]))
    return groups


def _phrase_index_of_tokens(input_ids: Tensor) -> Tensor:
    """``Tensor[R, N]`` int64: for each token, the index of the phrase it belongs to (phrases are
    separated by ".", the text starts with [CLS]); -1 for [CLS], [SEP], delimiters, padding."""
    delimiter = (input_ids == _BERT_DOT) | (input_ids == _BERT_QUESTION)
    special = delimiter | (input_ids == _BERT_CLS) | (input_ids == _BERT_SEP) | (input_ids == 0)
    phrase = torch.cumsum(delimiter.long(), dim=1) - delimiter.long()
    return torch.where(special, torch.full_like(phrase, -1), phrase)


class _GroundingOutputs(NamedTuple):
    logits: Tensor  # [R, Q, T] text-token logits (-inf past the text)
    pred_boxes: Tensor  # [R, Q, 4] normalised (cx, cy, w, h) of the unpadded image


class _GroundingRow(NamedTuple):
    boxes: Tensor  # [K, 4] float32 pixels, clipped
    scores: Tensor  # [K] float32
    phrase_indices: Tensor  # [K] int64 index of the phrase (within the row's prompt)
    phrases: list[str]  # [K] decoded tokens above text_threshold


def _postprocess_grounding(
    processor,
    outputs: _GroundingOutputs,
    input_ids: Tensor,
    sizes: Sequence[tuple[int, int]],
    box_threshold: float,
    text_threshold: float,
) -> list[_GroundingRow]:
    """Per batch row ``r``: boxes and scores from the processor's
    ``post_process_grounded_object_detection`` with ``target_sizes`` = ``sizes[r]`` = (H, W) of
    that row's image (GroundingDINO's normalised boxes are relative to the unpadded image, so
    they scale by (W, H)), clipped to the image; the phrase of each box's most probable prompt
    token; and the box's phrase in GroundingDINO's sense (the prompt tokens with probability
    > ``text_threshold``, without [CLS], [SEP], delimiters or padding)."""
    results = processor.post_process_grounded_object_detection(
        outputs,
        input_ids=input_ids,
        threshold=box_threshold,
        text_threshold=text_threshold,
        target_sizes=[(int(h), int(w)) for h, w in sizes],
    )
    input_ids = input_ids.to(outputs.logits.device)
    token_phrase = _phrase_index_of_tokens(input_ids)
    num_tokens = token_phrase.shape[1]
    probabilities = torch.sigmoid(outputs.logits)
    rows = []
    for r, result in enumerate(results):
        height, width = sizes[r]
        keep = probabilities[r].max(dim=-1).values > box_threshold  # the processor's own selection
        kept = probabilities[r][keep][:, :num_tokens]  # [K, N]
        valid = token_phrase[r] >= 0
        best_token = torch.where(valid[None, :], kept, torch.full_like(kept, -1.0)).argmax(dim=-1)
        phrase_indices = token_phrase[r][best_token]
        above = ((kept > text_threshold) & valid[None, :]).cpu()
        ids = input_ids[r].tolist()
        phrases = [
            processor.tokenizer.decode([ids[t] for t in torch.nonzero(row).flatten().tolist()]).strip()
            for row in above
        ]
        limits = torch.tensor([width, height, width, height], dtype=torch.float32, device=kept.device)
        boxes = torch.minimum(result["boxes"].to(device=kept.device, dtype=torch.float32).clamp(min=0), limits)
        if boxes.shape[0] != kept.shape[0]:  # pragma: no cover - guards against a processor change
            raise RuntimeError("GroundingDINO post-processing kept a different set of boxes than expected")
        rows.append(_GroundingRow(boxes.reshape(-1, 4), result["scores"].to(torch.float32), phrase_indices, phrases))
    return rows


def _empty_detections(device: torch.device) -> Detections:
    return Detections(
        boxes=torch.zeros(0, 4, device=device),
        scores=torch.zeros(0, device=device),
        labels=[],
        phrases=[],
        prompt_indices=torch.zeros(0, dtype=torch.int64, device=device),
    )


def ground(
    images: Images,
    prompts: Union[Sequence[str], Sequence[Sequence[str]]],
    models: Models,
    box_threshold: float = 0.35,
    text_threshold: float = 0.25,
) -> list[Detections]:
    """Boxes for text prompts in each image (GroundingDINO; the GDINO step of AT-GDINO-SAM).

    Args:
        images: a list of ``Tensor[3, H, W]`` uint8 or PIL images (sizes may differ), or one
            ``Tensor[B, 3, H, W]`` uint8.
        prompts: one list of phrases for every image, or one list per image (e.g. each frame's
            audio tags). Each phrase is lowercased and its "." / "?" removed (they delimit
            phrases in GroundingDINO's "a. b. c." prompt, built here). An image with no prompts
            gets empty :class:`Detections` and is not run through the model. Phrases that do not
            fit GroundingDINO's ``max_text_len`` (256 tokens) in one prompt are split over
            several prompts, each run on the image (one batched forward for everything).
        models: the loaded models (uses ``models.grounding_dino``).
        box_threshold: keep boxes whose best token probability is > this, in [0, 1].
        text_threshold: tokens with probability > this form a box's matched phrase, in [0, 1].

    Returns:
        one :class:`Detections` per image: boxes in that image's pixels (the processor's
        ``post_process_grounded_object_detection`` with ``target_sizes=(H, W)``), clipped to the
        image, highest score first.

    Note:
        Images of different sizes are padded to a common size for the batch, as GroundingDINO's
        own batching does; boxes stay relative to each image, but the padded pixels pass through
        the backbone, so results may differ slightly from running an image alone.
    """
    models = _check_models(models)
    image_list = media.as_image_list(images)
    per_image = _prompt_lists(prompts, len(image_list))
    box_threshold = _check_unit(box_threshold, "box_threshold")
    text_threshold = _check_unit(text_threshold, "text_threshold")
    device = models.device
    if not any(per_image):
        return [_empty_detections(device) for _ in image_list]

    model, processor = models.grounding_dino
    max_tokens = int(getattr(model.config, "max_text_len", 256))
    rows: list[tuple[int, int, list[str]]] = []  # (image index, first phrase index, phrases)
    for i, phrases in enumerate(per_image):
        for start, group in _chunk_prompts(phrases, processor.tokenizer, max_tokens):
            rows.append((i, start, group))
    row_images = [image_list[i].to(device) for i, _, _ in rows]
    texts = [". ".join(group) + "." for _, _, group in rows]
    sizes = [(int(image_list[i].shape[1]), int(image_list[i].shape[2])) for i, _, _ in rows]

    with torch.inference_mode():
        inputs = processor(images=row_images, text=texts, return_tensors="pt", padding="longest")
        inputs = {k: v.to(device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(models.dtype)
        raw = model(**inputs)
        # post-processing walks the boxes one by one: do it on the CPU after one transfer
        outputs = _GroundingOutputs(raw.logits.float().cpu(), raw.pred_boxes.float().cpu())
        row_results = _postprocess_grounding(
            processor, outputs, inputs["input_ids"].cpu(), sizes, box_threshold, text_threshold
        )

    collected: list[list[tuple[int, _GroundingRow]]] = [[] for _ in image_list]
    for (i, start, _), row in zip(rows, row_results):
        collected[i].append((start, row))
    detections = []
    for i, parts in enumerate(collected):
        if not parts:
            detections.append(_empty_detections(device))
            continue
        boxes = torch.cat([row.boxes for _, row in parts]).to(device)
        scores = torch.cat([row.scores for _, row in parts]).to(device)
        indices = torch.cat([row.phrase_indices + start for start, row in parts]).to(device=device, dtype=torch.int64)
        phrases = [phrase for _, row in parts for phrase in row.phrases]
        order = torch.sort(scores, descending=True, stable=True).indices
        indices = indices[order]
        detections.append(
            Detections(
                boxes=boxes[order],
                scores=scores[order],
                labels=[per_image[i][j] for j in indices.tolist()],
                phrases=[phrases[j] for j in order.tolist()],
                prompt_indices=indices,
            )
        )
    return detections


# --------------------------------------------------------------------------------------------
# Class-agnostic proposals (OWLv2 objectness)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proposals:
    """Class-agnostic box proposals in one image.

    Attributes:
        boxes: ``Tensor[K, 4]`` float32, pixel (x1, y1, x2, y2) of the image, clipped to it.
        scores: ``Tensor[K]`` float32 objectness in [0, 1], highest first.
    """

    boxes: Tensor
    scores: Tensor

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def _owl_boxes_to_pixels(boxes: Tensor, height: int, width: int) -> Tensor:
    """OWLv2 boxes → pixel (x1, y1, x2, y2) of the input image.

    Args:
        boxes: ``Tensor[N, 4]`` normalised (cx, cy, w, h) as OWLv2 predicts them: relative to the
            square the processor padded the image to (bottom/right padding to side max(H, W))
            before resizing.
        height, width: the input image's size.

    Returns:
        ``Tensor[N, 4]`` float32: the corners scaled by max(H, W), clipped to [0, W] × [0, H].
    """
    side = float(max(height, width))
    boxes = boxes.to(torch.float32)
    cx, cy, w, h = boxes.unbind(-1)
    corners = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1) * side
    limits = torch.tensor([width, height, width, height], dtype=torch.float32, device=boxes.device)
    return torch.minimum(corners.clamp(min=0), limits)


_FULL_FRAME = 0.98  # a box spanning ≥ 98 % of the frame's width or height is "the whole frame"


def _select_proposals(
    boxes: Tensor,
    scores: Tensor,
    height: int,
    width: int,
    threshold: float,
    drop_full_frame: bool,
    keep_best_if_none: bool,
) -> Proposals:
    """Choose among one image's pixel boxes ``Tensor[N, 4]`` (clipped to the image) and
    objectness ``Tensor[N]``: boxes of zero width or height (e.g. predicted inside OWLv2's
    padding and clipped away) are never proposals; see :func:`propose_boxes` for the rest."""
    box_width, box_height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    non_empty = (box_width > 0) & (box_height > 0)
    usable = non_empty
    if drop_full_frame:
        usable = usable & (box_width < _FULL_FRAME * width) & (box_height < _FULL_FRAME * height)
    keep = usable & (scores >= threshold)
    if keep_best_if_none and not bool(keep.any()) and bool(non_empty.any()):
        # the best usable box; the best box at all when every box spans the frame (as the
        # authors' code falls back to its top detection)
        candidates = usable if bool(usable.any()) else non_empty
        masked = torch.where(candidates, scores, torch.full_like(scores, -1.0))
        keep = torch.zeros_like(keep)
        keep[masked.argmax()] = True
    index = torch.nonzero(keep).flatten()
    order = index[torch.sort(scores[index], descending=True, stable=True).indices]
    return Proposals(boxes[order], scores[order])


def propose_boxes(
    images: Images,
    models: Models,
    threshold: float = 0.5,
    drop_full_frame: bool = True,
    keep_best_if_none: bool = True,
) -> list[Proposals]:
    """Class-agnostic box proposals from OWLv2's objectness head (the OWOD step of OWOD-BIND).

    One batched forward of OWLv2's vision tower (its text tower is never run); every patch
    token predicts a box (box head) and an objectness logit (objectness head).

    Args:
        images: a list of ``Tensor[3, H, W]`` uint8 or PIL images (sizes may differ), or one
            ``Tensor[B, 3, H, W]`` uint8.
        models: the loaded models (uses ``models.owlv2``).
        threshold: keep boxes with objectness = sigmoid(logit) ≥ threshold (τ_BB, 0.5 in the
            paper), in [0, 1].
        drop_full_frame: drop boxes that span the frame, defined as the authors' code does:
            width ≥ 0.98·W *or* height ≥ 0.98·H (after clipping to the image; the authors
            compare both sides with the image height, which is the same on AVSBench's square
            frames).
        keep_best_if_none: when no box passes, keep the single box of highest objectness among
            the usable ones (among all non-empty boxes if every box spans the frame, as the
            authors' code falls back to its top detection), so that every frame has a proposal.

    Returns:
        one :class:`Proposals` per image, in that image's pixels (OWLv2's processor pads to a
        square at the bottom/right, so normalised boxes scale by max(H, W)), highest objectness
        first. Boxes that clip to zero width or height (predicted in the padding) are dropped.
        A higher threshold gives a subset. No NMS is applied.
    """
    models = _check_models(models)
    image_list = media.as_image_list(images)
    threshold = _check_unit(threshold, "threshold")
    model, processor = models.owlv2
    device = models.device
    with torch.inference_mode():
        pixel_values = processor(images=[im.to(device) for im in image_list], return_tensors="pt")["pixel_values"]
        feature_map, _ = model.image_embedder(pixel_values=pixel_values.to(device=device, dtype=models.dtype))
        features = feature_map.reshape(feature_map.shape[0], -1, feature_map.shape[-1])
        objectness = torch.sigmoid(model.objectness_predictor(features).float())
        boxes = model.box_predictor(features, feature_map).float()
        results = []
        for i, image in enumerate(image_list):
            height, width = int(image.shape[1]), int(image.shape[2])
            pixel_boxes = _owl_boxes_to_pixels(boxes[i], height, width)
            results.append(
                _select_proposals(
                    pixel_boxes, objectness[i], height, width, threshold, drop_full_frame, keep_best_if_none
                )
            )
    return results


# --------------------------------------------------------------------------------------------
# Segmentation (SAM)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskSet:
    """SAM masks in one image.

    Attributes:
        masks: ``Tensor[K, H, W]`` bool at the image's resolution.
        iou_scores: ``Tensor[K]`` float32, SAM's predicted IoU of each mask.
        stability_scores: ``Tensor[K]`` float32, IoU of the mask logits thresholded at
            ``mask_threshold ± stability_score_offset`` (0 when both are empty).
        boxes: ``Tensor[K, 4]`` float32 pixel (x1, y1, x2, y2): with box prompts, the prompt
            boxes; for automatic masks, the mask's bounds (``x2``/``y2`` one past the last
            pixel; ``(0, 0, 0, 0)`` for an empty mask).
        points: ``Tensor[K, 2]`` float32 pixel (x, y) of the grid point that produced each
            automatic mask; ``None`` with box prompts.
    """

    masks: Tensor
    iou_scores: Tensor
    stability_scores: Tensor
    boxes: Tensor
    points: Optional[Tensor] = None

    def __len__(self) -> int:
        return int(self.masks.shape[0])


def _point_grid(points_per_side: int) -> Tensor:
    """segment-anything's point grid: ``Tensor[n*n, 2]`` float64 (x, y) in [0, 1], the centres
    of an n × n grid of cells (offset 1/(2n) from the borders), row by row (x varies fastest).
    float64 as in segment-anything, which scales the grid to pixels and to the model's input
    frame in float64 and rounds to float32 only after dividing by the input size."""
    offset = 1.0 / (2 * points_per_side)
    side = torch.linspace(offset, 1 - offset, points_per_side, dtype=torch.float64)
    ys, xs = torch.meshgrid(side, side, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)


def _stability_scores(logits: Tensor, mask_threshold: float, offset: float) -> Tensor:
    """segment-anything's stability score: |logits > t + o| / |logits > t − o| per mask
    (``Tensor[N, H, W]`` → ``Tensor[N]``); 0 where the larger mask is empty."""
    intersections = (logits > (mask_threshold + offset)).flatten(1).sum(1, dtype=torch.int64)
    unions = (logits > (mask_threshold - offset)).flatten(1).sum(1, dtype=torch.int64)
    scores = intersections.to(torch.float32) / unions.clamp(min=1).to(torch.float32)
    return torch.where(unions > 0, scores, torch.zeros_like(scores))


def _mask_bounds(masks: Tensor) -> Tensor:
    """Bounds of bool masks ``Tensor[N, H, W]`` → ``Tensor[N, 4]`` float32 (x1, y1, x2, y2),
    with x2/y2 one past the last True column/row; (0, 0, 0, 0) for an empty mask."""
    n, height, width = masks.shape
    if n == 0:
        return torch.zeros(0, 4, dtype=torch.float32, device=masks.device)
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    row_index = torch.arange(height, device=masks.device)
    col_index = torch.arange(width, device=masks.device)
    y1 = torch.where(rows, row_index, height).amin(dim=1)
    y2 = torch.where(rows, row_index + 1, 0).amax(dim=1)
    x1 = torch.where(cols, col_index, width).amin(dim=1)
    x2 = torch.where(cols, col_index + 1, 0).amax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).to(torch.float32)
    empty = ~rows.any(dim=1)
    return torch.where(empty[:, None], torch.zeros_like(boxes), boxes)


def _upscale_logits(
    low_res: Tensor, input_size: tuple[int, int], resized: tuple[int, int], original: tuple[int, int]
) -> Tensor:
    """SAM's mask post-processing: low-res logits ``Tensor[N, h, w]`` → upsample to the padded
    model input (bilinear) → crop the resized image → upsample to the original ``(H, W)``.
    Returns float32 logits ``Tensor[N, H, W]``."""
    if low_res.shape[0] == 0:
        return torch.zeros(0, *original, dtype=torch.float32, device=low_res.device)
    x = F.interpolate(low_res.float()[:, None], size=input_size, mode="bilinear", align_corners=False)
    x = x[..., : resized[0], : resized[1]]
    x = F.interpolate(x, size=original, mode="bilinear", align_corners=False)
    return x[:, 0]


def _check_box_list(boxes: Any, count: int) -> list[Tensor]:
    if isinstance(boxes, Tensor) or not isinstance(boxes, (list, tuple)):
        raise ValueError(
            f"boxes: expected a list with one Tensor[K, 4] per image ({count}), got {type(boxes).__name__}"
        )
    if len(boxes) != count:
        raise ValueError(f"boxes: expected one Tensor[K, 4] per image ({count}), got {len(boxes)}")
    return [check_boxes(b, f"boxes[{i}]").to(torch.float32) for i, b in enumerate(boxes)]


def sam_masks(
    images: Images,
    models: Models,
    boxes: Optional[Sequence[Tensor]] = None,
    *,
    points_per_side: int = 32,
    points_per_batch: int = 64,
    pred_iou_threshold: float = 0.88,
    stability_score_threshold: float = 0.95,
    stability_score_offset: float = 1.0,
    nms_threshold: float = 0.7,
    mask_threshold: float = 0.0,
) -> list[MaskSet]:
    """SAM masks for box prompts, or SAM's automatic masks from a point grid.

    Each image is embedded once (``SamModel.get_image_embeddings``, one batched forward for all
    images that need it) and its embedding answers all of its prompts through the mask decoder.

    Args:
        images: a list of ``Tensor[3, H, W]`` uint8 or PIL images (sizes may differ), or one
            ``Tensor[B, 3, H, W]`` uint8.
        models: the loaded models (uses ``models.sam``).
        boxes: one ``Tensor[K, 4]`` per image in pixel (x1, y1, x2, y2) of that image: one mask
            per box (``multimask_output=False``), all boxes of an image in one decoder call; an
            image with no box gets empty results ``(0, H, W)`` and is not embedded. ``None``:
            automatic mask generation (below).
        points_per_side, points_per_batch, pred_iou_threshold, stability_score_threshold,
        stability_score_offset, nms_threshold: automatic mode (the offset also sets the
            returned stability scores with boxes), segment-anything's
            ``SamAutomaticMaskGenerator`` (defaults 32, 64, 0.88, 0.95, 1.0, 0.7) without crop
            layers or small-region removal: a ``points_per_side``² grid of single foreground
            points (:func:`_point_grid`) goes through the decoder ``points_per_batch`` at a time
            with 3 masks per point; masks with predicted IoU ≤ ``pred_iou_threshold`` (skipped if
            that is 0) or stability score < ``stability_score_threshold`` (skipped if 0) are
            dropped; duplicates are removed by :func:`cmsf.ops.nms` on the masks' bounding boxes
            with ``nms_threshold``, scored by predicted IoU.
        mask_threshold: logit threshold that binarises SAM's masks (SAM: 0.0).

    Returns:
        one :class:`MaskSet` per image; with boxes, in the order of the boxes; automatic masks
        in decreasing predicted IoU (NMS order).

    Note:
        Automatic mode differs from segment-anything in small, deliberate ways: the masks'
        bounding boxes (used for NMS and returned) have ``x2``/``y2`` one past the last pixel
        (segment-anything's are inclusive, so IoUs differ by about a pixel's width); a stability
        score whose looser mask is empty is 0, not NaN; masks stay dense (no RLE); images are
        prepared by the Hugging Face ``SamImageProcessor`` (resize the longest side, normalise,
        pad bottom/right) and mask logits follow SAM's post-processing (upsample to the padded
        input, crop, upsample to the image) before thresholds and stability are computed.
    """
    models = _check_models(models)
    image_list = media.as_image_list(images)
    box_list = None if boxes is None else _check_box_list(boxes, len(image_list))
    if box_list is None:
        points_per_side = _check_positive_int(points_per_side, "points_per_side")
        points_per_batch = _check_positive_int(points_per_batch, "points_per_batch")
        pred_iou_threshold = _check_unit(pred_iou_threshold, "pred_iou_threshold")
        stability_score_threshold = _check_unit(stability_score_threshold, "stability_score_threshold")
        nms_threshold = _check_unit(nms_threshold, "nms_threshold")
    stability_score_offset = _check_finite(stability_score_offset, "stability_score_offset", minimum=0.0)
    mask_threshold = _check_finite(mask_threshold, "mask_threshold")

    device = models.device
    needed = [i for i in range(len(image_list)) if box_list is None or box_list[i].shape[0] > 0]
    results: list[Optional[MaskSet]] = [
        None if box_list is None or box_list[i].shape[0] > 0 else _empty_mask_set(image, device)
        for i, image in enumerate(image_list)
    ]
    if not needed:
        return results  # type: ignore[return-value]

    model, processor = models.sam
    with torch.inference_mode():
        prepared = processor(images=[image_list[i].to(device) for i in needed], return_tensors="pt")
        pixel_values = prepared["pixel_values"].to(device=device, dtype=models.dtype)
        input_size = (int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))
        embeddings = torch.cat(
            [model.get_image_embeddings(chunk) for chunk in pixel_values.split(_SAM_IMAGES_PER_FORWARD)]
        )
        for slot, i in enumerate(needed):
            original = (int(image_list[i].shape[1]), int(image_list[i].shape[2]))
            resized = tuple(int(v) for v in prepared["reshaped_input_sizes"][slot])
            scale = torch.tensor(
                [resized[1] / original[1], resized[0] / original[0]], dtype=torch.float64, device=device
            )
            embedding = embeddings[slot : slot + 1]
            if box_list is not None:
                results[i] = _masks_for_boxes(
                    model, embedding, box_list[i].to(device), scale, input_size, resized, original,
                    mask_threshold, stability_score_offset,
                )
            else:
                results[i] = _automatic_masks(
                    model, embedding, scale, input_size, resized, original, points_per_side, points_per_batch,
                    pred_iou_threshold, stability_score_threshold, stability_score_offset, nms_threshold,
                    mask_threshold,
                )
    return results  # type: ignore[return-value]


# Images per forward of SAM's image encoder: a video's frames go together, in chunks this size,
# so that a long clip does not need one encoder activation set per frame at once (ViT-H's
# global-attention layers take about 1 GB per 1024 px image in float32).
_SAM_IMAGES_PER_FORWARD = 8


def _empty_mask_set(image: Tensor, device: torch.device) -> MaskSet:
    height, width = int(image.shape[1]), int(image.shape[2])
    return MaskSet(
        masks=torch.zeros(0, height, width, dtype=torch.bool, device=device),
        iou_scores=torch.zeros(0, device=device),
        stability_scores=torch.zeros(0, device=device),
        boxes=torch.zeros(0, 4, device=device),
    )


def _masks_for_boxes(
    model, embedding: Tensor, boxes: Tensor, scale: Tensor, input_size, resized, original,
    mask_threshold: float, stability_offset: float,
) -> MaskSet:
    model_boxes = (boxes.reshape(-1, 2, 2) * scale.float()).reshape(1, -1, 4)
    out = model(image_embeddings=embedding, input_boxes=model_boxes, multimask_output=False)
    logits = _upscale_logits(out.pred_masks[0, :, 0], input_size, resized, original)
    return MaskSet(
        masks=logits > mask_threshold,
        iou_scores=out.iou_scores[0, :, 0].float(),
        stability_scores=_stability_scores(logits, mask_threshold, float(stability_offset)),
        boxes=boxes,
    )


def _filter_point_masks(
    low_res: Tensor,
    iou: Tensor,
    points: Tensor,
    pred_iou_threshold: float,
    stability_threshold: float,
    stability_offset: float,
    mask_threshold: float,
    upscale: Callable[[Tensor], Tensor] = lambda logits: logits,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """segment-anything's per-batch filtering of point-prompted masks.

    Args:
        low_res: ``Tensor[N, h, w]`` mask logits as the decoder gives them; iou: ``Tensor[N]``
            predicted IoU; points: ``Tensor[N, 2]`` the prompt of each mask.
        upscale: logits → logits at image resolution (:func:`_upscale_logits`).

    Returns:
        ``(masks, iou, stability, points)`` of the masks with iou > ``pred_iou_threshold``
        (not applied when it is 0) and stability ≥ ``stability_threshold`` (not applied when 0);
        ``masks`` are the upscaled ``logits > mask_threshold``. The IoU filter needs no mask, so
        it runs before upscaling: only its survivors are upscaled and stability-scored (same
        result as segment-anything, which upscales every mask first, for far less work).
    """
    if pred_iou_threshold > 0.0:
        passing = iou > pred_iou_threshold
        low_res, iou, points = low_res[passing], iou[passing], points[passing]
    logits = upscale(low_res)
    stability = _stability_scores(logits, mask_threshold, stability_offset)
    keep = torch.ones_like(iou, dtype=torch.bool)
    if stability_threshold > 0.0:
        keep &= stability >= stability_threshold
    index = torch.nonzero(keep).flatten()
    return logits[index] > mask_threshold, iou[index], stability[index], points[index]


def _deduplicate(masks: Tensor, iou: Tensor, stability: Tensor, points: Tensor, nms_threshold: float) -> MaskSet:
    """Remove duplicate masks as segment-anything does: NMS on the masks' bounding boxes scored
    by predicted IoU; survivors in NMS order. The NMS sees segment-anything's inclusive boxes
    (x2/y2 the last True column/row); the returned boxes are cmsf's (one past the last)."""
    bounds = _mask_bounds(masks)
    inclusive = bounds.clone()
    inclusive[:, 2:] = torch.maximum(bounds[:, 2:] - 1, bounds[:, :2])
    order = nms(inclusive, iou, nms_threshold)
    return MaskSet(
        masks=masks[order],
        iou_scores=iou[order],
        stability_scores=stability[order],
        boxes=bounds[order],
        points=points[order],
    )


def _automatic_masks(
    model, embedding: Tensor, scale: Tensor, input_size, resized, original, points_per_side: int,
    points_per_batch: int, pred_iou_threshold: float, stability_threshold: float, stability_offset: float,
    nms_threshold: float, mask_threshold: float,
) -> MaskSet:
    device = embedding.device
    height, width = original
    grid = _point_grid(points_per_side).to(device) * torch.tensor([width, height], dtype=torch.float64, device=device)
    parts = []
    for points in grid.split(points_per_batch):
        count = points.shape[0]
        out = model(
            image_embeddings=embedding,
            input_points=(points * scale)[None, :, None, :],
            input_labels=torch.ones(1, count, 1, dtype=torch.long, device=device),
            multimask_output=True,
        )
        per_point = out.pred_masks.shape[2]
        parts.append(
            _filter_point_masks(
                out.pred_masks[0].flatten(0, 1),
                out.iou_scores[0].flatten().float(),
                points.repeat_interleave(per_point, dim=0).float(),
                pred_iou_threshold,
                stability_threshold,
                stability_offset,
                mask_threshold,
                upscale=lambda low_res: _upscale_logits(low_res, input_size, resized, original),
            )
        )
    masks, iou, stability, points = (torch.cat(column) for column in zip(*parts))
    return _deduplicate(masks, iou, stability, points, nms_threshold)
