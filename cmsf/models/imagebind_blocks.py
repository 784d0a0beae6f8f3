"""The building blocks of ImageBind's towers (vision, audio, text), under Meta's parameter names.

Each block computes what its counterpart in Meta's ``imagebind.models`` computes
(facebookresearch/ImageBind: ``SimpleTransformer``, ``BlockWithMasking``, ``nn.MultiheadAttention``,
``Normalize``, ``LearnableLogitScaling``), so ``imagebind_huge.pth`` loads as is. Used by
:mod:`cmsf.models.imagebind` (the model, its vision and audio towers) and
:mod:`cmsf.models.imagebind_text` (the text tower).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LAYER_NORM_EPS = 1e-6  # of every LayerNorm in the trunks and heads (the audio stem's uses 1e-5)


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameters and result.

    Parameters (Meta's names): ``in_proj_weight [3D, D]`` and ``in_proj_bias [3D]`` (q, k, v
    stacked), ``out_proj`` (Linear D → D), and with ``bias_kv`` ``bias_k, bias_v [1, 1, D]``:
    a learnt key and value appended to every sequence *after* the input projection, i.e. one
    extra token every query can attend to (``nn.MultiheadAttention(add_bias_kv=True)``).
    With ``causal``, token i attends to tokens 0 … i only: Meta's text trunk passes the additive
    mask ``-inf`` above the diagonal (``build_causal_attention_mask``), which is this.
    """

    def __init__(self, dim: int, num_heads: int, bias_kv: bool, causal: bool = False) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"num_heads: embed dim {dim} is not divisible by {num_heads} heads")
        if causal and bias_kv:
            raise ValueError("causal: a causal mask with an extra bias key/value token is not defined")
        self.num_heads = num_heads
        self.causal = causal
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        if bias_kv:
            self.bias_k = nn.Parameter(torch.zeros(1, 1, dim))
            self.bias_v = nn.Parameter(torch.zeros(1, 1, dim))
        else:
            self.bias_k = self.bias_v = None
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: Tensor) -> Tensor:
        """``x (Tensor[B, L, D])`` → ``Tensor[B, L, D]``."""
        batch, length, dim = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(batch, 1, dim)], dim=1)
            v = torch.cat([v, self.bias_v.expand(batch, 1, dim)], dim=1)
        # [B, L, D] -> [B, heads, L, D / heads]; scale 1/sqrt(D / heads) as nn.MultiheadAttention
        q, k, v = (t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out_proj(y.transpose(1, 2).reshape(batch, length, dim))


class Mlp(nn.Module):
    """``fc1`` (D → 4D), exact GELU, ``fc2`` (4D → D)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm_1(x))``, then ``x + mlp(norm_2(x))``.

    Meta's ``BlockWithMasking`` also has drop path (identity at inference) and optional layer
    scale (not used by ImageBind's vision and audio trunks).
    """

    def __init__(self, dim: int, num_heads: int, bias_kv: bool, causal: bool = False) -> None:
        super().__init__()
        self.norm_1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads, bias_kv, causal)
        self.norm_2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm_1(x))
        return x + self.mlp(self.norm_2(x))


class Transformer(nn.Module):
    """``pre_transformer_layer`` (a LayerNorm for vision, nothing for audio and text), then the
    blocks (causal for text)."""

    def __init__(
        self, dim: int, num_blocks: int, num_heads: int, *, pre_norm: bool, bias_kv: bool, causal: bool = False
    ) -> None:
        super().__init__()
        self.pre_transformer_layer = (
            nn.Sequential(nn.LayerNorm(dim, eps=LAYER_NORM_EPS)) if pre_norm else nn.Identity()
        )
        self.blocks = nn.ModuleList(Block(dim, num_heads, bias_kv, causal) for _ in range(num_blocks))

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens (Tensor[B, L, D])`` → ``Tensor[B, L, D]``."""
        x = self.pre_transformer_layer(tokens)
        for block in self.blocks:
            x = block(x)
        return x


class RepeatAsVideo(nn.Module):
    """``Tensor[B, C, H, W]`` → ``Tensor[B, C, T, H, W]``: an image as a video of ``T`` equal
    frames (Meta's ``PadIm2Video(pad_type="repeat", ntimes=2)``)."""

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.frames = frames

    def forward(self, x: Tensor) -> Tensor:
        return x.unsqueeze(2).expand(-1, -1, self.frames, -1, -1)


class PatchStem(nn.Module):
    """``proj`` (a convolution, maybe after ``RepeatAsVideo``), flattened to tokens
    ``Tensor[B, N, D]``, then the optional ``norm_layer`` (Meta's ``PatchEmbedGeneric``)."""

    def __init__(self, proj: nn.Module, norm_layer: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.proj = proj
        self.norm_layer = norm_layer

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        return x if self.norm_layer is None else self.norm_layer(x)


class PositionEmbedding(nn.Module):
    """A learnt ``pos_embed [1, tokens, D]`` (Meta's ``SpatioTemporalPosEmbeddingHelper``)."""

    def __init__(self, num_tokens: int, dim: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))
        nn.init.normal_(self.pos_embed, std=dim**-0.5)


class Tokenizer(nn.Module):
    """Patches → ``[cls] + patch tokens`` + position embedding: ``Tensor[B, 1 + N, D]``.

    Meta's ``RGBDTPreprocessor`` / ``AudioPreprocessor`` with one cls token. The input size is
    fixed (``num_patches`` tokens): Meta's position-embedding interpolation for other sizes is
    not needed by ImageBind's own preprocessing and is not implemented.
    """

    def __init__(self, stem: PatchStem, num_patches: int, dim: int) -> None:
        super().__init__()
        self.rgbt_stem = stem
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding_helper = PositionEmbedding(1 + num_patches, dim)
        nn.init.normal_(self.cls_token, std=dim**-0.5)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.rgbt_stem(x)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.pos_embedding_helper.pos_embed


class SelectCls(nn.Module):
    """``Tensor[B, L, D]`` → ``Tensor[B, D]``: the first (cls) token."""

    def forward(self, x: Tensor) -> Tensor:
        return x[:, 0]


def head(dim: int, out_dim: int) -> nn.Sequential:
    """LayerNorm, cls token, Linear without bias: ``Tensor[B, L, D]`` → ``Tensor[B, out_dim]``."""
    return nn.Sequential(nn.LayerNorm(dim, eps=LAYER_NORM_EPS), SelectCls(), nn.Linear(dim, out_dim, bias=False))


class Normalize(nn.Module):
    """L2-normalise the last dimension."""

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1, p=2)


class LogitScale(nn.Module):
    """Multiply by ``min(exp(log_logit_scale), 100)``; ``log_logit_scale`` is a fixed buffer
    (Meta's ``LearnableLogitScaling(learnable=False)``), part of the checkpoint."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.register_buffer("log_logit_scale", torch.tensor(math.log(scale)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.clip(self.log_logit_scale.exp(), max=100) * x
