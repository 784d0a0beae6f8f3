"""An independent re-statement of the MAVL authors' inference (mmaaz60/mvits_for_class_agnostic_od:
``models/model.py::_make_mdef_detr_minus_language``, ``MDefDETRMinusLanguage``, its deformable
transformer, ``inference/minus_language.py``), the oracle of tests/test_mavl.py.

Written from the reference's structure, not from cmsf.models.mavl: NestedTensor-style padding masks and
valid ratios, DETR's position encoding from the mask's cumulative sums, a separate encode and
decode pass, per-layer intermediate outputs with the reference points of the last layer, the
deformable attention as a ``grid_sample`` written out here, ``nn.MultiheadAttention`` in
sequence-first layout, and torchvision's ``T.Resize`` on a PIL image for the input. Module names
are the authors', so its ``state_dict`` is in the checkpoint's key names.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T
from PIL import Image
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import FrozenBatchNorm2d


def grid_sample_attention(value, shapes, locations, weights):
    """value [N, S, M, Dh], locations [N, Q, M, L, P, 2] in [0, 1], weights [N, Q, M, L, P]."""
    n, _, m, dh = value.shape
    _, q, _, levels, points, _ = locations.shape
    per_level = value.split([h * w for h, w in shapes], dim=1)
    out = torch.zeros(n, m, dh, q, device=value.device, dtype=value.dtype)
    for level, (h, w) in enumerate(shapes):
        v = per_level[level].permute(0, 2, 3, 1).reshape(n * m, dh, h, w)
        grid = (2 * locations[:, :, :, level] - 1).permute(0, 2, 1, 3, 4).reshape(n * m, q, points, 2)
        sampled = F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        wl = weights[:, :, :, level].permute(0, 2, 1, 3).reshape(n * m, 1, q, points)
        out += (sampled * wl).sum(-1).view(n, m, dh, q)
    return out.reshape(n, m * dh, q).transpose(1, 2)


class MSDeformAttn(nn.Module):
    def __init__(self, d, levels, heads, points):
        super().__init__()
        self.d, self.levels, self.heads, self.points = d, levels, heads, points
        self.sampling_offsets = nn.Linear(d, heads * levels * points * 2)
        self.attention_weights = nn.Linear(d, heads * levels * points)
        self.value_proj = nn.Linear(d, d)
        self.output_proj = nn.Linear(d, d)

    def forward(self, query, reference, src, shapes, padding_mask):
        n, q, _ = query.shape
        value = self.value_proj(src).masked_fill(padding_mask[..., None], 0.0)
        value = value.view(n, src.shape[1], self.heads, self.d // self.heads)
        offsets = self.sampling_offsets(query).view(n, q, self.heads, self.levels, self.points, 2)
        weights = self.attention_weights(query).view(n, q, self.heads, self.levels * self.points)
        weights = F.softmax(weights, -1).view(n, q, self.heads, self.levels, self.points)
        wh = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float32, device=query.device)
        locations = reference[:, :, None, :, None, :] + offsets / wh[None, None, None, :, None, :]
        return self.output_proj(grid_sample_attention(value, shapes, locations, weights))


class EncoderLayer(nn.Module):
    def __init__(self, d, ffn, levels, heads, points):
        super().__init__()
        self.self_attn = MSDeformAttn(d, levels, heads, points)
        self.norm1 = nn.LayerNorm(d)
        self.linear1 = nn.Linear(d, ffn)
        self.linear2 = nn.Linear(ffn, d)
        self.norm2 = nn.LayerNorm(d)

    def forward(self, src, pos, reference, shapes, mask):
        src = self.norm1(src + self.self_attn(src + pos, reference, src, shapes, mask))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class DecoderLayer(nn.Module):
    def __init__(self, d, ffn, levels, heads, points):
        super().__init__()
        self.cross_attn = MSDeformAttn(d, levels, heads, points)
        self.norm1 = nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=0.1)
        self.norm2 = nn.LayerNorm(d)
        self.linear1 = nn.Linear(d, ffn)
        self.linear2 = nn.Linear(ffn, d)
        self.norm3 = nn.LayerNorm(d)

    def forward(self, tgt, query_pos, reference, memory, shapes, mask):
        q = (tgt + query_pos).transpose(0, 1)
        tgt = self.norm2(tgt + self.self_attn(q, q, tgt.transpose(0, 1))[0].transpose(0, 1))
        tgt = self.norm1(tgt + self.cross_attn(tgt + query_pos, reference, memory, shapes, mask))
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


class Stack(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)


class Transformer(nn.Module):
    def __init__(self, d, ffn, levels, heads, points, enc, dec):
        super().__init__()
        self.d_model = d
        self.encoder = Stack([EncoderLayer(d, ffn, levels, heads, points) for _ in range(enc)])
        self.decoder = Stack([DecoderLayer(d, ffn, levels, heads, points) for _ in range(dec)])
        self.level_embed = nn.Parameter(torch.randn(levels, d))
        self.reference_points = nn.Linear(d, 2)

    @staticmethod
    def valid_ratio(mask):
        h, w = mask.shape[1:]
        return torch.stack([(~mask[:, 0, :]).sum(1).float() / w, (~mask[:, :, 0]).sum(1).float() / h], -1)

    def encode(self, srcs, masks, positions):
        shapes = [tuple(s.shape[-2:]) for s in srcs]
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        mask = torch.cat([m.flatten(1) for m in masks], 1)
        pos = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[l][None, None] for l, p in enumerate(positions)], 1)
        ratios = torch.stack([self.valid_ratio(m) for m in masks], 1)  # [N, L, 2]
        refs = []
        for level, (h, w) in enumerate(shapes):
            ry, rx = torch.meshgrid(torch.linspace(0.5, h - 0.5, h), torch.linspace(0.5, w - 0.5, w), indexing="ij")
            ry = ry.reshape(-1)[None] / (ratios[:, None, level, 1] * h)
            rx = rx.reshape(-1)[None] / (ratios[:, None, level, 0] * w)
            refs.append(torch.stack([rx, ry], -1))
        reference = torch.cat(refs, 1)[:, :, None] * ratios[:, None]
        for layer in self.encoder.layers:
            src = layer(src, pos, reference, shapes, mask)
        return {"memory": src, "mask": mask, "shapes": shapes, "ratios": ratios}

    def decode(self, cache, query_embed):
        n = cache["memory"].shape[0]
        query_pos, tgt = torch.split(query_embed, self.d_model, dim=1)
        query_pos = query_pos[None].expand(n, -1, -1)
        tgt = tgt[None].expand(n, -1, -1)
        reference = self.reference_points(query_pos).sigmoid()
        outputs, references = [], []
        for layer in self.decoder.layers:
            tgt = layer(tgt, query_pos, reference[:, :, None] * cache["ratios"][:, None], cache["memory"],
                        cache["shapes"], cache["mask"])
            outputs.append(tgt)
            references.append(reference)  # no box refinement: unchanged
        return torch.stack(outputs), reference, torch.stack(references)


class MLP(nn.Module):
    def __init__(self, d, out, n):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(d, d) for _ in range(n - 1)] + [nn.Linear(d, out)])

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


class Body(nn.Module):
    def __init__(self, block, layers):
        super().__init__()
        resnet = torchvision.models.resnet.ResNet(block, layers, norm_layer=FrozenBatchNorm2d)
        self.body = IntermediateLayerGetter(resnet, {"layer2": "0", "layer3": "1", "layer4": "2"})


def sine_position(mask, num_feats):
    """DETR's PositionEmbeddingSine(normalize=True) of a padding mask [N, H, W]."""
    not_mask = ~mask
    y = not_mask.cumsum(1, dtype=torch.float32)
    x = not_mask.cumsum(2, dtype=torch.float32)
    y = y / (y[:, -1:, :] + 1e-6) * 2 * math.pi
    x = x / (x[:, :, -1:] + 1e-6) * 2 * math.pi
    dim_t = torch.arange(num_feats, dtype=torch.float32)
    dim_t = 10000 ** (2 * (dim_t // 2) / num_feats)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


class PositionEncoding(nn.Module):
    def __init__(self, num_feats):
        super().__init__()
        self.num_feats = num_feats


class ReferenceMAVL(nn.Module):
    """MDefDETRMinusLanguage(num_classes=1, num_queries, num_feature_levels=4) on a ResNet."""

    def __init__(self, block, layers, d, heads, points, ffn, enc, dec, queries):
        super().__init__()
        body = Body(block, layers)
        self.backbone = nn.Sequential(body, PositionEncoding(d // 2))
        channels = [128 * block.expansion, 256 * block.expansion, 512 * block.expansion]
        proj = [nn.Sequential(nn.Conv2d(c, d, 1), nn.GroupNorm(32, d)) for c in channels]
        proj.append(nn.Sequential(nn.Conv2d(channels[-1], d, 3, stride=2, padding=1), nn.GroupNorm(32, d)))
        self.input_proj = nn.ModuleList(proj)
        self.query_embed = nn.Embedding(queries, 2 * d)
        self.transformer = Transformer(d, ffn, 4, heads, points, enc, dec)
        cls, box = nn.Linear(d, 2), MLP(d, 4, 3)
        self.class_embed = nn.ModuleList([cls for _ in range(dec)])
        self.bbox_embed = nn.ModuleList([box for _ in range(dec)])

    def forward(self, image):  # image [1, 3, H, W], unpadded: every mask entry False
        mask = torch.zeros(image.shape[0], *image.shape[-2:], dtype=torch.bool)
        feats = list(self.backbone[0].body(image).values())
        srcs, masks, positions = [], [], []
        for l, f in enumerate(feats + [None]):
            src = self.input_proj[l](f if f is not None else feats[-1])
            m = F.interpolate(mask[None].float(), size=src.shape[-2:]).bool()[0]
            srcs.append(src)
            masks.append(m)
            positions.append(sine_position(m, self.backbone[1].num_feats))
        cache = self.transformer.encode(srcs, masks, positions)
        hs, init_ref, inter_refs = self.transformer.decode(cache, self.query_embed.weight)
        last = hs.shape[0] - 1
        ref = inter_refs[last - 1] if last > 0 else init_ref
        ref = ref.clamp(0, 1)
        ref = torch.log(ref.clamp(min=1e-5) / (1 - ref).clamp(min=1e-5))
        tmp = self.bbox_embed[last](hs[last])
        tmp[..., :2] += ref
        return self.class_embed[last](hs[last]), tmp.sigmoid()


def reference_infer(model, image_uint8, shorter_side):
    """``MinusLanguage.infer_image`` without the int() of the boxes: (boxes [Q, 4] pixels, probas [Q])."""
    pil = Image.fromarray(image_uint8.permute(1, 2, 0).numpy())
    transform = T.Compose(
        [T.Resize(shorter_side), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
    )
    with torch.no_grad():
        logits, boxes = model(transform(pil).unsqueeze(0))
    probas = 1 - logits.softmax(-1)[0, :, -1]
    cx, cy, w, h = boxes[0].unbind(1)
    corners = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], 1)
    img_w, img_h = pil.size
    return corners * torch.tensor([img_w, img_h, img_w, img_h], dtype=torch.float32), probas


def randomise(model, seed):
    """Spread every parameter and buffer (frozen batch-norm statistics included) so that no
    part of the model is an identity or a constant."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.5 + 0.75)
            elif name.endswith("running_mean") or name.endswith(".bias") or "bias" in name.rsplit(".", 1)[-1]:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.05)
            elif tensor.dim() <= 1:
                tensor.copy_(1.0 + torch.randn(tensor.shape, generator=generator) * 0.1)
            else:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / math.sqrt(fan_in))
    return model
