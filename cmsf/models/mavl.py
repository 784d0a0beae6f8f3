"""MAVL, the class-agnostic object detector of the CMSF paper's OWOD-BIND: the "minus language"
MDef-DETR of Maaz et al. (ECCV 2022, repository mmaaz60/mvits_for_class_agnostic_od), built to
load the authors' checkpoint ``MDef_DETR_minus_language_r101_epoch10.pth`` and to give the
boxes and objectness of their inference script.

Architecture (the authors' ``_make_mdef_detr_minus_language``): torchvision's ResNet-101 with
``FrozenBatchNorm2d`` (layers 2–4 give 3 feature levels, strides 8 / 16 / 32, and a strided 3 × 3
convolution of layer 4 a fourth, stride 64), DETR's sine position encoding (normalised, *without*
Deformable DETR's −0.5 shift), a Deformable-DETR transformer (d_model 256, 8 heads, 4 levels,
4 sampling points, FFN 1024, 6 encoder and 6 decoder layers, 300 queries, no box refinement, no
two-stage), a 2-logit class head (object, no-object) and a 3-layer box MLP.

Built from maintained parts: torchvision's ResNet, ``FrozenBatchNorm2d`` and
``IntermediateLayerGetter``; ``torch.nn.MultiheadAttention``; and transformers' pure-PyTorch
multi-scale deformable attention (``MultiScaleDeformableAttention`` of its Deformable DETR, a
``grid_sample`` formulation, no compiled op). transformers' ``DeformableDetrModel`` itself is not
used: its sine encoding shifts positions by −0.5 and its backbone is not torchvision's, so it
would compute a different function of the same weights. The modules here carry the authors'
names, so their checkpoint loads with ``load_state_dict(strict=True)`` and no key mapping.

Inference (the authors' ``MinusLanguage.infer_image``): PIL bilinear resize of the shorter side
to 800 (no maximum size), ImageNet mean / std, one image size per forward (frames of one video
share a size; different sizes run in separate forwards, so nothing is padded); objectness =
1 − softmax(logits)[no-object]; boxes (cx, cy, w, h) normalised to the image → pixel
(x1, y1, x2, y2). All 300 queries are returned (a set prediction: no NMS). The authors' script
then truncates the pixel boxes to integers; :func:`mavl_detect` keeps them as floats.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops import box_convert
from torchvision.ops.misc import FrozenBatchNorm2d
from transformers.models.deformable_detr.modeling_deformable_detr import MultiScaleDeformableAttention

from cmsf.models.resampling import resized_size

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAVL",
    "MAVL_IMAGES_PER_FORWARD",
    "MavlConfig",
    "PAPER_MAVL",
    "TINY_MAVL",
    "load_mavl",
    "mavl_detect",
    "mavl_inputs",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MAVL_IMAGES_PER_FORWARD = 8
"""Images per forward of :func:`mavl_detect` (frames of one size are batched up to this)."""

NUM_LEVELS = 4  # 3 backbone levels + 1 strided convolution of the last


@dataclass(frozen=True)
class MavlConfig:
    """The sizes of a MAVL. :data:`PAPER_MAVL` is the authors' checkpoint's; :data:`TINY_MAVL`
    a small one for tests (random weights only).

    Attributes:
        block: torchvision ResNet block, ``"bottleneck"`` (ResNet-50/101) or ``"basic"``.
        layers: blocks per ResNet stage (ResNet-101: 3, 4, 23, 3).
        d_model: transformer width (a multiple of 32: the input projections use GroupNorm(32)).
        num_heads, num_points: deformable attention heads and sampling points per level.
        ffn_dim: transformer feed-forward width.
        encoder_layers, decoder_layers: transformer depth.
        num_queries: object queries, i.e. boxes per image.
        shorter_side: the resize of the inference script (PIL, shorter side, no maximum).
    """

    block: str = "bottleneck"
    layers: tuple[int, int, int, int] = (3, 4, 23, 3)
    d_model: int = 256
    num_heads: int = 8
    num_points: int = 4
    ffn_dim: int = 1024
    encoder_layers: int = 6
    decoder_layers: int = 6
    num_queries: int = 300
    shorter_side: int = 800


PAPER_MAVL = MavlConfig()
"""``MDef_DETR_minus_language_r101_epoch10.pth``: ResNet-101, d_model 256, 6 + 6 layers, 300 queries."""

TINY_MAVL = MavlConfig(
    block="basic",
    layers=(1, 1, 1, 1),
    d_model=32,
    num_heads=2,
    num_points=2,
    ffn_dim=64,
    encoder_layers=1,
    decoder_layers=2,
    num_queries=20,
    shorter_side=128,
)
"""A MAVL small enough for CPU tests (ResNet with one basic block per stage, 20 queries, 128 px)."""


# ---------------------------------------------------------------------------- the model
class _MLP(nn.Module):
    """ReLU between linear layers (the box head): ``layers.{i}`` as the authors name them."""

    def __init__(self, width: int, out_features: int, num_layers: int) -> None:
        super().__init__()
        sizes = [width] * num_layers + [out_features]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class _Levels:
    """The flattened multi-scale memory's geometry: per-level ``(H_l, W_l)`` as a list and as a
    ``Tensor[L, 2]`` long, and each level's first index in the flattened sequence."""

    def __init__(self, shapes: list[tuple[int, int]], device: torch.device) -> None:
        self.shapes = shapes
        self.tensor = torch.as_tensor(shapes, dtype=torch.long, device=device)
        starts = [0]
        for height, width in shapes[:-1]:
            starts.append(starts[-1] + height * width)
        self.starts = torch.as_tensor(starts, dtype=torch.long, device=device)


class _DeformableAttention(nn.Module):
    """Multi-scale deformable attention (Deformable DETR's ``MSDeformAttn``) with 2-d reference
    points; the sampling itself is transformers' pure-PyTorch ``MultiScaleDeformableAttention``."""

    def __init__(self, d_model: int, num_heads: int, num_points: int) -> None:
        super().__init__()
        self.num_heads, self.num_points = num_heads, num_points
        self.sampling_offsets = nn.Linear(d_model, num_heads * NUM_LEVELS * num_points * 2)
        self.attention_weights = nn.Linear(d_model, num_heads * NUM_LEVELS * num_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.sample = MultiScaleDeformableAttention()

    def reset_parameters(self) -> None:
        """Deformable DETR's initialisation: offsets start on a ring of directions, uniform weights."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True).values).view(self.num_heads, 1, 1, 2)
        grid = grid.repeat(1, NUM_LEVELS, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for linear in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, query: Tensor, reference: Tensor, memory: Tensor, levels: _Levels) -> Tensor:
        """query ``[B, Q, D]``, reference ``[B, Q, L, 2]`` (x, y) in [0, 1], memory
        ``[B, S, D]`` (S = Σ H_l·W_l) → ``[B, Q, D]``."""
        batch, queries, _ = query.shape
        heads, points = self.num_heads, self.num_points
        value = self.value_proj(memory).view(batch, memory.shape[1], heads, -1)
        offsets = self.sampling_offsets(query).view(batch, queries, heads, NUM_LEVELS, points, 2)
        weights = self.attention_weights(query).view(batch, queries, heads, NUM_LEVELS * points)
        weights = weights.softmax(-1).view(batch, queries, heads, NUM_LEVELS, points)
        normaliser = torch.stack([levels.tensor[:, 1], levels.tensor[:, 0]], -1)  # (W_l, H_l)
        locations = reference[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
        sampled = self.sample(value, levels.tensor, levels.shapes, levels.starts, locations, weights, 64)
        return self.output_proj(sampled)


class _EncoderLayer(nn.Module):
    def __init__(self, config: MavlConfig) -> None:
        super().__init__()
        d = config.d_model
        self.self_attn = _DeformableAttention(d, config.num_heads, config.num_points)
        self.norm1 = nn.LayerNorm(d)
        self.linear1 = nn.Linear(d, config.ffn_dim)
        self.linear2 = nn.Linear(config.ffn_dim, d)
        self.norm2 = nn.LayerNorm(d)

    def forward(self, src: Tensor, pos: Tensor, reference: Tensor, levels: _Levels) -> Tensor:
        src = self.norm1(src + self.self_attn(src + pos, reference, src, levels))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class _DecoderLayer(nn.Module):
    def __init__(self, config: MavlConfig) -> None:
        super().__init__()
        d = config.d_model
        self.cross_attn = _DeformableAttention(d, config.num_heads, config.num_points)
        self.norm1 = nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, config.num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        self.linear1 = nn.Linear(d, config.ffn_dim)
        self.linear2 = nn.Linear(config.ffn_dim, d)
        self.norm3 = nn.LayerNorm(d)

    def forward(self, target: Tensor, query_pos: Tensor, reference: Tensor, memory: Tensor, levels: _Levels) -> Tensor:
        q = target + query_pos
        target = self.norm2(target + self.self_attn(q, q, target, need_weights=False)[0])
        target = self.norm1(target + self.cross_attn(target + query_pos, reference, memory, levels))
        return self.norm3(target + self.linear2(F.relu(self.linear1(target))))


class _LayerStack(nn.Module):
    """``layers.{i}``: the encoder or decoder layers, under the authors' names."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)


class _Transformer(nn.Module):
    def __init__(self, config: MavlConfig) -> None:
        super().__init__()
        self.d_model = config.d_model
        self.encoder = _LayerStack([_EncoderLayer(config) for _ in range(config.encoder_layers)])
        self.decoder = _LayerStack([_DecoderLayer(config) for _ in range(config.decoder_layers)])
        self.level_embed = nn.Parameter(torch.empty(NUM_LEVELS, config.d_model))
        self.reference_points = nn.Linear(config.d_model, 2)

    def forward(self, sources: list[Tensor], positions: list[Tensor], query_embed: Tensor) -> Tensor:
        """Per-level features and position encodings ``[B, D, H_l, W_l]`` and the query
        embedding ``[Q, 2D]`` (position | content) → the last decoder layer's output
        ``[B, Q, D]`` and the queries' reference points ``[B, Q, 2]`` (x, y) in [0, 1]."""
        batch = sources[0].shape[0]
        device = sources[0].device
        levels = _Levels([(int(s.shape[2]), int(s.shape[3])) for s in sources], device)
        memory = torch.cat([s.flatten(2).transpose(1, 2) for s in sources], 1)
        pos = torch.cat(
            [p.flatten(2).transpose(1, 2) + self.level_embed[l].view(1, 1, -1) for l, p in enumerate(positions)], 1
        )
        # the encoder's reference points: each token's own centre, the same on every level
        # (no padding: every valid ratio is 1)
        centres = []
        for height, width in levels.shapes:
            ys, xs = torch.meshgrid(
                torch.linspace(0.5, height - 0.5, height, dtype=torch.float32, device=device) / height,
                torch.linspace(0.5, width - 0.5, width, dtype=torch.float32, device=device) / width,
                indexing="ij",
            )
            centres.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1))
        reference = torch.cat(centres, 0).to(memory.dtype)[None, :, None, :].expand(batch, -1, NUM_LEVELS, -1)
        for layer in self.encoder.layers:
            memory = layer(memory, pos, reference, levels)

        query_pos, target = torch.split(query_embed, self.d_model, dim=1)
        query_pos = query_pos.unsqueeze(0).expand(batch, -1, -1)
        target = target.unsqueeze(0).expand(batch, -1, -1)
        query_reference = self.reference_points(query_pos).sigmoid()
        level_reference = query_reference[:, :, None, :].expand(-1, -1, NUM_LEVELS, -1)
        for layer in self.decoder.layers:
            target = layer(target, query_pos, level_reference, memory, levels)
        return target, query_reference


class _Backbone(nn.Module):
    """torchvision ResNet with ``FrozenBatchNorm2d``; ``body`` returns layers 2, 3, 4."""

    def __init__(self, config: MavlConfig) -> None:
        super().__init__()
        if config.block not in ("bottleneck", "basic"):
            raise ValueError(f"block: expected 'bottleneck' or 'basic', got {config.block!r}")
        block = Bottleneck if config.block == "bottleneck" else BasicBlock
        resnet = ResNet(block, list(config.layers), norm_layer=FrozenBatchNorm2d)
        self.body = IntermediateLayerGetter(resnet, return_layers={"layer2": "0", "layer3": "1", "layer4": "2"})
        self.num_channels = [128 * block.expansion, 256 * block.expansion, 512 * block.expansion]


def _sine_position(height: int, width: int, num_features: int, device: torch.device) -> Tensor:
    """DETR's normalised sine position encoding of an unpadded ``height × width`` map:
    ``Tensor[2·num_features, H, W]`` float32, y features first. Positions are 1…H (1…W) divided by
    H (W) + 1e-6 and scaled by 2π (DETR's; Deformable DETR subtracts 0.5 first, MAVL does not)."""
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device) / (height + eps) * scale
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device) / (width + eps) * scale
    dim_t = torch.arange(num_features, dtype=torch.float32, device=device)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_features)

    def encode(positions: Tensor) -> Tensor:  # [N] → [N, num_features], sin / cos interleaved
        angles = positions[:, None] / dim_t
        return torch.stack([angles[:, 0::2].sin(), angles[:, 1::2].cos()], dim=2).flatten(1)

    pos_y = encode(y)[:, None, :].expand(height, width, num_features)
    pos_x = encode(x)[None, :, :].expand(height, width, num_features)
    return torch.cat([pos_y, pos_x], dim=2).permute(2, 0, 1)


class _PositionEncoding(nn.Module):
    """``backbone.1`` of the authors' model (no parameters): see :func:`_sine_position`."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, feature: Tensor) -> Tensor:
        height, width = feature.shape[-2:]
        pos = _sine_position(int(height), int(width), self.num_features, feature.device)
        return pos.to(feature.dtype).unsqueeze(0).expand(feature.shape[0], -1, -1, -1)


class MAVL(nn.Module):
    """MDef-DETR minus language (MAVL's class-agnostic detector), module names as in the authors'
    ``MDefDETRMinusLanguage`` so that their ``state_dict`` loads strictly.

    ``forward(pixel_values)`` takes ``Tensor[B, 3, H, W]`` (ImageNet-normalised, see
    :func:`mavl_inputs`; one size per batch, no padding) and returns the class logits
    ``Tensor[B, Q, 2]`` (object, no-object) and boxes ``Tensor[B, Q, 4]`` (cx, cy, w, h)
    normalised to the image, Q = ``config.num_queries``.
    """

    def __init__(self, config: MavlConfig = PAPER_MAVL) -> None:
        super().__init__()
        if config.d_model % 32 or config.d_model % config.num_heads:
            raise ValueError(f"d_model: expected a multiple of 32 and of num_heads, got {config.d_model}")
        self.config = config
        d = config.d_model
        backbone = _Backbone(config)
        # backbone.0 / backbone.1 as the authors' Joiner(backbone, position encoding)
        self.backbone = nn.ModuleList([backbone, _PositionEncoding(d // 2)])
        projections = [nn.Sequential(nn.Conv2d(c, d, kernel_size=1), nn.GroupNorm(32, d)) for c in backbone.num_channels]
        projections.append(
            nn.Sequential(nn.Conv2d(backbone.num_channels[-1], d, kernel_size=3, stride=2, padding=1), nn.GroupNorm(32, d))
        )
        self.input_proj = nn.ModuleList(projections)
        self.query_embed = nn.Embedding(config.num_queries, 2 * d)
        self.transformer = _Transformer(config)
        # one head shared by every decoder layer, listed once per layer as the authors do
        class_head, box_head = nn.Linear(d, 2), _MLP(d, 4, 3)
        self.class_embed = nn.ModuleList([class_head] * config.decoder_layers)
        self.bbox_embed = nn.ModuleList([box_head] * config.decoder_layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The authors' initialisation of a fresh model (used for random weights): Xavier for the
        transformer's matrices, Deformable DETR's attention init, N(0, 1) level embeddings, box
        width / height biased to sigmoid(−2) ≈ 0.12; PyTorch defaults elsewhere."""
        for parameter in self.transformer.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)
        for module in self.transformer.modules():
            if isinstance(module, _DeformableAttention):
                module.reset_parameters()
        nn.init.xavier_uniform_(self.transformer.reference_points.weight, gain=1.0)
        nn.init.zeros_(self.transformer.reference_points.bias)
        nn.init.normal_(self.transformer.level_embed)
        with torch.no_grad():
            self.bbox_embed[0].layers[-1].bias[2:] = -2.0

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        features = list(self.backbone[0].body(pixel_values).values())
        sources = [proj(f) for proj, f in zip(self.input_proj, features)]
        sources.append(self.input_proj[len(features)](features[-1]))
        positions = [self.backbone[1](s) for s in sources]
        hidden, reference = self.transformer(sources, positions, self.query_embed.weight)
        logits = self.class_embed[-1](hidden)
        offsets = self.bbox_embed[-1](hidden)
        centre = offsets[..., :2] + _inverse_sigmoid(reference)
        boxes = torch.cat([centre, offsets[..., 2:]], -1).sigmoid()
        return logits, boxes


def _inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """log(x / (1 − x)) with both clamped to ≥ eps (Deformable DETR's)."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


# ---------------------------------------------------------------------------- inference
def mavl_inputs(image: Tensor, shorter_side: int) -> Tensor:
    """The authors' MAVL preprocessing of one image: PIL bilinear resize of the shorter side to
    ``shorter_side`` (PIL antialiases when shrinking and rounds to uint8, as
    ``torchvision.transforms.Resize`` on a PIL image does), then /255 and ImageNet mean / std.

    Args:
        image (Tensor[3, H, W]): uint8, any device (resized on the CPU with PIL).

    Returns:
        ``Tensor[3, h, w]`` float32 on the CPU.
    """
    height, width = int(image.shape[1]), int(image.shape[2])
    new_height, new_width = resized_size(height, width, shorter_side)
    pil = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    if (new_height, new_width) != (height, width):
        pil = pil.resize((new_width, new_height), Image.BILINEAR)
    pixels = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).to(torch.float32) / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (pixels - mean) / std


def mavl_detect(images: Sequence[Tensor], model: MAVL) -> list[tuple[Tensor, Tensor]]:
    """All of MAVL's queries on each image, as the authors' inference computes them.

    Images of one size run together (up to :data:`MAVL_IMAGES_PER_FORWARD` per forward), on the
    model's device and in its dtype, under ``torch.inference_mode()``.

    Args:
        images: ``Tensor[3, H, W]`` uint8 each (sizes may differ).
        model: a :class:`MAVL` (eval mode).

    Returns:
        per image ``(boxes, scores)`` on the model's device: ``boxes (Tensor[Q, 4])`` float32
        pixel (x1, y1, x2, y2) of that image, not clipped (a query may reach outside the image);
        ``scores (Tensor[Q])`` float32 objectness = 1 − softmax(logits)[no-object], in query
        order (not sorted, no threshold, no NMS).
    """
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        by_size.setdefault((int(image.shape[1]), int(image.shape[2])), []).append(i)
    results: list[Any] = [None] * len(images)
    with torch.inference_mode():
        for (height, width), indices in by_size.items():
            for start in range(0, len(indices), MAVL_IMAGES_PER_FORWARD):
                chunk = indices[start : start + MAVL_IMAGES_PER_FORWARD]
                pixels = torch.stack([mavl_inputs(images[i], model.config.shorter_side) for i in chunk])
                logits, boxes = model(pixels.to(device=device, dtype=dtype))
                scores = 1.0 - logits.float().softmax(-1)[..., -1]
                scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=device)
                corners = box_convert(boxes.float(), in_fmt="cxcywh", out_fmt="xyxy") * scale
                for j, i in enumerate(chunk):
                    results[i] = (corners[j], scores[j])
    return results


# ---------------------------------------------------------------------------- the checkpoint
def _read_checkpoint(path: str) -> dict[str, Tensor]:
    """The ``"model"`` state dict of an MDef-DETR checkpoint, read with ``weights_only=True``
    (the training script also pickles its ``argparse.Namespace`` of arguments, allowed here)."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"expected a dict with a 'model' state dict (the authors' format), found {found}")
    return checkpoint["model"]


def load_mavl(path: str | os.PathLike[str], config: MavlConfig = PAPER_MAVL) -> MAVL:
    """MAVL with the weights of an MDef-DETR-minus-language checkpoint (``{"model": state_dict,
    ...}`` as the authors' training script saves it, e.g. ``MDef_DETR_minus_language_r101_epoch10.pth``),
    loaded strictly under the authors' module names, on the CPU in float32, eval mode.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not such a checkpoint (not a dict with ``"model"``, missing / unexpected
            keys or shapes that differ from ``config``'s), the message names the path and a few
            of the differences.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        state_dict = _read_checkpoint(path)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    except Exception as error:  # noqa: BLE001 - pickle / zip errors of a file that is not a checkpoint
        raise ValueError(
            f"{path}: not a torch checkpoint that loads with weights_only=True "
            f"({type(error).__name__}: {(str(error).splitlines() or [''])[0]}). "
            "If the file is trusted, re-save its state dict: "
            "torch.save({'model': torch.load(path, weights_only=False)['model']}, new_path)"
        ) from None
    model = MAVL(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    # frozen batch norm drops num_batches_tracked on load (as the authors' FrozenBatchNorm2d does)
    unexpected = sorted(k for k in set(state_dict) - set(expected) if not k.endswith("num_batches_tracked"))
    wrong = sorted(k for k in set(expected) & set(state_dict) if tuple(expected[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise ValueError(
            f"{path}: not an MDef-DETR-minus-language checkpoint of the expected architecture: {'; '.join(parts)}"
        )
    model.load_state_dict(state_dict, strict=True)
    return model.eval()
