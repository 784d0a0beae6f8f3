"""ImageBind's text tower and its tokenizer, numerically equal to Meta's.

Meta's ``ImageBindModel`` (facebookresearch/ImageBind) embeds text with an OpenCLIP-style causal
transformer; this module re-implements it, under Meta's parameter names so that the ``text`` part
of ``imagebind_huge.pth`` loads as is (:class:`cmsf.models.imagebind.ImageBind` holds the tower,
``ImageBind.embed_text`` runs it)::

    text ──► CLIP BPE tokens Tensor[N, 77] int64          (imagebind_text_inputs)
      │ token embedding (49 408 × D) + learnt position embedding [1, 77, D]
      │ causal transformer blocks (pre-norm, no extra key/value token, no LayerNorm before)
      │ the end-of-text token's output (its id, 49 407, is the largest: argmax of the ids)
      │ LayerNorm (ε 1e-6), Linear D → out_embed_dim without bias
      ▼ L2-normalise, × the trained logit scale (Meta's ``LearnableLogitScaling``, max 100)
    Tensor[N, out_embed_dim]

The tokenizer is OpenAI CLIP's byte-level BPE as Meta ships it (``SimpleTokenizer``, context
length 77): ``ftfy.fix_text``, HTML unescaped twice, whitespace collapsed, lower-cased, split by
CLIP's pattern, each piece's UTF-8 bytes mapped to printable characters and merged by the BPE
ranks of ``bpe_simple_vocab_16e6.txt.gz``; ``<|startoftext|>`` first, the text's tokens cut to
75, ``<|endoftext|>`` last, zeros after. The vocabulary file ships with cmsf
(``cmsf/data/bpe_simple_vocab_16e6.txt.gz``): it is OpenAI CLIP's file, byte for byte the one in
Meta's repository, under OpenAI's MIT licence (``cmsf/data/bpe_simple_vocab_16e6.LICENSE``).

Meta's tokenizer cut long texts to 77 tokens *without* the end-of-text token until November 2025
(facebookresearch/ImageBind commit 1125e1e, "Ensure EOS token is always placed at end of text
sequence"); this follows the current code, which always ends with it.
"""

from __future__ import annotations

import functools
import gzip
import html
import os
from importlib import resources
from typing import NamedTuple, Sequence, Union

import ftfy
import regex
import torch
from torch import Tensor, nn

from cmsf.models.imagebind_blocks import LAYER_NORM_EPS, LogitScale, Normalize, Transformer

TEXT_CONTEXT_LENGTH = 77  # tokens per text, start and end tokens included
TEXT_VOCAB_SIZE = 49408  # 256 bytes, 256 word-final bytes, 48 894 merges, start, end
TEXT_LOGIT_SCALE_INIT = 1 / 0.07  # Meta's initial text logit scale; the trained one is in the checkpoint
START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
_NUM_MERGES = TEXT_VOCAB_SIZE - 2 * 256 - 2
_WORD_END = "</w>"
_PATTERN = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)  # CLIP's pre-tokenizer: the two special tokens, English contractions, letters, one digit, other


def default_bpe_path() -> str:
    """The path of the CLIP BPE merges shipped with cmsf (``bpe_simple_vocab_16e6.txt.gz``)."""
    return os.fspath(resources.files("cmsf") / "data" / "bpe_simple_vocab_16e6.txt.gz")


def byte_characters() -> list[str]:
    """The 256 characters standing for the bytes 0 … 255 in CLIP's BPE: a byte that is a
    printable Latin-1 character (``!`` … ``~``, ``¡`` … ``¬``, ``®`` … ``ÿ``) stands for
    itself; the others, in increasing order, for the characters 256, 257, …"""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    kept = set(printable)
    others = iter(range(256, 512))
    return [chr(b) if b in kept else chr(next(others)) for b in range(256)]


class ClipTokenizer:
    """CLIP's byte-level BPE tokenizer as Meta's ImageBind uses it (``SimpleTokenizer``).

    Args:
        bpe_path: the gzipped merges file (``bpe_simple_vocab_16e6.txt.gz``; its first line is a
            header, the next 48 894 lines are the merges by rank).
    """

    def __init__(self, bpe_path: Union[str, "os.PathLike[str]"]) -> None:
        path = os.fspath(bpe_path)
        if not os.path.isfile(path):
            raise ValueError(f"bpe_path: no such file {path!r}")
        with gzip.open(path, "rt", encoding="utf-8") as file:
            lines = file.read().split("\n")[1 : _NUM_MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        if len(merges) != _NUM_MERGES or any(len(m) != 2 for m in merges):
            raise ValueError(f"bpe_path: expected {_NUM_MERGES} merges of two symbols in {path!r}")
        self._byte_chars = byte_characters()
        singles = sorted(self._byte_chars)  # ids by character: the printable bytes, then the others
        symbols = singles + [c + _WORD_END for c in singles] + ["".join(m) for m in merges]
        self.vocabulary: dict[str, int] = {s: i for i, s in enumerate(symbols + [START_OF_TEXT, END_OF_TEXT])}
        self._ranks = {merge: rank for rank, merge in enumerate(merges)}
        self._words: dict[str, list[int]] = {}  # memo of word → ids (pure: a function of the file)
        self.start_id = self.vocabulary[START_OF_TEXT]
        self.end_id = self.vocabulary[END_OF_TEXT]

    def _merge(self, word: str) -> list[str]:
        """BPE of one pre-token (its bytes as characters): the last symbol marked word-final,
        then, while some adjacent pair is a merge, every occurrence (left to right, not
        overlapping) of the lowest-ranked such pair joined into one symbol."""
        symbols = list(word[:-1]) + [word[-1] + _WORD_END]
        while len(symbols) > 1:
            ranked = [(self._ranks.get(pair, _NUM_MERGES), pair) for pair in zip(symbols, symbols[1:])]
            rank, (first, second) = min(ranked, key=lambda item: item[0])
            if rank == _NUM_MERGES:
                break
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text`` (no start or end token, not cut)."""
        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        text = regex.sub(r"\s+", " ", text).strip().lower()
        ids: list[int] = []
        for piece in _PATTERN.findall(text):
            if piece in (START_OF_TEXT, END_OF_TEXT):  # the special tokens stand for themselves
                ids.append(self.vocabulary[piece])
                continue
            word = "".join(self._byte_chars[b] for b in piece.encode("utf-8"))
            if word not in self._words:
                self._words[word] = [self.vocabulary[s] for s in self._merge(word)]
            ids.extend(self._words[word])
        return ids

    def __call__(self, texts: Sequence[str], context_length: int = TEXT_CONTEXT_LENGTH) -> Tensor:
        """``Tensor[N, context_length]`` int64: start token, the text's first ``context_length
        − 2`` tokens, end token, zeros."""
        out = torch.zeros(len(texts), context_length, dtype=torch.int64)
        for row, text in enumerate(texts):
            ids = [self.start_id, *self.encode(text)][: context_length - 1] + [self.end_id]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
        return out


@functools.lru_cache(maxsize=1)
def default_tokenizer() -> ClipTokenizer:
    """The tokenizer of :func:`default_bpe_path`, read once per process (the file is constant)."""
    return ClipTokenizer(default_bpe_path())


def imagebind_text_inputs(texts: Union[str, Sequence[str]]) -> Tensor:
    """Texts → the text tower's input, exactly as Meta's ``load_and_transform_text``.

    Args:
        texts: one string or a non-empty sequence of strings (any Unicode; empty strings allowed).

    Returns:
        ``Tensor[N, 77]`` int64 on the CPU (N = 1 for one string): per row the start token
        49 406, at most 75 BPE tokens of the text, the end token 49 407, zeros after.
    """
    if isinstance(texts, str):
        texts = [texts]
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Sequence) or len(texts) == 0:
        raise ValueError(f"texts: expected a string or a non-empty sequence of strings, got {texts!r:.80}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts: item {i} is {type(text).__name__}, expected a string")
    return default_tokenizer()(list(texts))


class TextPreprocessor(nn.Module):
    """Token ids → ``token_embedding(ids) + pos_embed`` (Meta's ``TextPreprocessor`` with
    causal masking and no cls token; its fixed ``mask`` buffer is not kept, the blocks are causal)."""

    def __init__(self, dim: int, vocab_size: int = TEXT_VOCAB_SIZE, context_length: int = TEXT_CONTEXT_LENGTH) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Parameter(torch.empty(1, context_length, dim))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens (Tensor[B, L] int64)`` → ``Tensor[B, L, D]``."""
        return self.token_embedding(tokens) + self.pos_embed


class TextHead(nn.Module):
    """The end-of-text token's features, then ``proj`` = LayerNorm, Linear without bias (Meta's
    ``SelectEOSAndProject``). The end token is found as the position of the largest id
    (``tokens.argmax(-1)``, its first occurrence), as Meta's preprocessor finds it."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(dim, eps=LAYER_NORM_EPS), nn.Linear(dim, out_dim, bias=False))

    def forward(self, x: Tensor, tokens: Tensor) -> Tensor:
        """``x (Tensor[B, L, D])``, ``tokens (Tensor[B, L])`` → ``Tensor[B, out_dim]``."""
        return self.proj(x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)])


class TextTower(NamedTuple):
    """The text tower's four parts, each the ``text`` entry of the ``ImageBind`` module dict of
    the same role (``modality_preprocessors`` …)."""

    preprocessor: TextPreprocessor
    trunk: Transformer
    head: TextHead
    postprocessor: nn.Sequential


def text_tower(dim: int, num_blocks: int, num_heads: int, out_dim: int) -> TextTower:
    """Meta's text tower of these sizes, randomly initialised: token and position embeddings,
    causal blocks, the end token's LayerNorm + Linear, normalise and scale."""
    return TextTower(
        TextPreprocessor(dim),
        Transformer(dim, num_blocks, num_heads, pre_norm=False, bias_kv=False, causal=True),
        TextHead(dim, out_dim),
        nn.Sequential(Normalize(), LogitScale(TEXT_LOGIT_SCALE_INIT)),
    )


def check_tokens(tokens: Tensor, vocab_size: int) -> None:
    """``tokens`` must be ``Tensor[N, 77]`` of integer ids below ``vocab_size``, N ≥ 1."""
    if not isinstance(tokens, Tensor):
        raise ValueError(f"tokens: expected Tensor[N, {TEXT_CONTEXT_LENGTH}] int64, got {type(tokens).__name__}")
    if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] != TEXT_CONTEXT_LENGTH:
        raise ValueError(f"tokens: expected Tensor[N, {TEXT_CONTEXT_LENGTH}] int64, got shape {tuple(tokens.shape)}")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise ValueError(f"tokens: expected integer token ids, got dtype {tokens.dtype}")
    if bool((tokens < 0).any()) or bool((tokens >= vocab_size).any()):
        raise ValueError(f"tokens: ids must lie in [0, {vocab_size}), got {int(tokens.min())} … {int(tokens.max())}")
