"""Audio tagging with AST: the AT step of AT-GDINO-SAM (audio segments → AudioSet tags).

:func:`audio_tag_probabilities` gives AST's sigmoid probabilities of all 527 AudioSet classes
for a batch of segments; :func:`tag_audio` keeps the labels at or above τ_AT. The AST model runs
under ``torch.inference_mode()`` on ``models.device`` in ``models.dtype``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cmsf.checks import check_unit
from cmsf.io.inputs import Waveforms, as_waveform_list, check_sample_rate, mixdown, resample
from cmsf.models.loading import Models, check_models

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
    models = check_models(models)
    segments = as_waveform_list(waveforms)
    sample_rate = check_sample_rate(sample_rate)
    model, extractor = models.ast
    target_rate = int(extractor.sampling_rate)
    mono = []
    for waveform in segments:
        signal = resample(mixdown(waveform.detach().float().cpu()), sample_rate, target_rate)
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
    threshold = check_unit(threshold, "threshold")
    probabilities = audio_tag_probabilities(waveforms, sample_rate, models).cpu()
    id2label = models.ast.model.config.id2label
    tags: list[list[tuple[str, float]]] = []
    for row in probabilities:
        order = torch.sort(row, descending=True, stable=True).indices
        tags.append([(str(id2label[int(j)]), float(row[j])) for j in order.tolist() if row[j] >= threshold])
    return tags

