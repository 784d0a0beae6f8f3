"""An independent re-statement of AVSBench's AVSS evaluation (``avs_scripts/avss``), for tests:
the palette and colour decoding of ``color_dataloader.py``, the padding of ``V2Dataset``,
``_batch_miou_fscore`` / ``calc_color_miou_fscore`` of ``utils/compute_color_metrics.py`` and the
reduction of ``test.py`` (batches of 4 videos), with its ``torch.histc`` counting and numpy
colour matching, not cmsf's code. Predictions are fed to it as one-hot logits, so that its
softmax → argmax gives back the saved class maps.
"""

from __future__ import annotations

import csv
import functools
import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def get_palette(num_cls: int = 71) -> np.ndarray:
    pal = [0] * (num_cls * 3)
    for j in range(num_cls):
        lab, i = j, 0
        while lab > 0:
            pal[j * 3 + 0] |= ((lab >> 0) & 1) << (7 - i)
            pal[j * 3 + 1] |= ((lab >> 1) & 1) << (7 - i)
            pal[j * 3 + 2] |= ((lab >> 2) & 1) << (7 - i)
            i += 1
            lab >>= 3
    return np.array(pal).reshape(-1, 3)


def color_mask_to_label(mask: Image.Image, pal: np.ndarray) -> np.ndarray:
    array = np.array(mask).astype("int32")
    semantic = np.stack([np.all(np.equal(array, colour), axis=-1) for colour in pal], axis=-1).astype(np.float32)
    return np.argmax(semantic, axis=-1)


def load_label(path: Path, pal: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(_decoded(Path(path).read_bytes(), pal.tobytes()).astype(np.int64))


@functools.lru_cache(maxsize=None)
def _decoded(content: bytes, palette: bytes) -> np.ndarray:
    """The reference's decoding of one PNG's bytes (a pure function of them, so the tests, which
    score the same files several times, decode each file once)."""
    pal = np.frombuffer(palette, dtype=np.int64).reshape(-1, 3)
    image = Image.open(io.BytesIO(content)).convert("RGB").resize((224, 224), Image.NEAREST)
    return color_mask_to_label(image, pal).astype(np.int8)


def video_labels(folder: Path, pal: np.ndarray) -> torch.Tensor:
    """``[10, 224, 224]``: the masks the folder has (counted by listing it), zero-padded."""
    count = len([n for n in os.listdir(folder) if n.endswith(".png")])
    labels = [load_label(folder / f"{i}.png", pal) for i in range(count)]
    labels += [torch.zeros_like(labels[0]) for _ in range(10 - count)]
    return torch.stack(labels)


def video_predictions(folder: Path, uid: str, pal: np.ndarray) -> torch.Tensor:
    """``[10, 71, 224, 224]`` one-hot logits of the saved predictions (a missing file: all background)."""
    maps = []
    for k in range(10):
        path = folder / f"{uid}_{k}.png"
        maps.append(load_label(path, pal) if path.is_file() else torch.zeros(224, 224, dtype=torch.int64))
    return torch.nn.functional.one_hot(torch.stack(maps), 71).permute(0, 3, 1, 2).float() * 10.0


def batch_miou_fscore(output: torch.Tensor, target: torch.Tensor, nclass: int, beta2: float = 0.3):
    predict = torch.argmax(output, 1) + 1
    target = target.float() + 1
    predict = predict.float() * (target > 0).float()
    intersection = predict * (predict == target).float()
    cls_count = torch.zeros(nclass).float()
    ious = torch.zeros(nclass).float()
    fscores = torch.zeros(nclass).float()
    for i in range(target.shape[0]):
        area_inter = torch.histc(intersection[i], bins=nclass, min=1, max=nclass)
        area_pred = torch.histc(predict[i], bins=nclass, min=1, max=nclass)
        area_lab = torch.histc(target[i], bins=nclass, min=1, max=nclass)
        area_union = area_pred + area_lab - area_inter
        iou = 1.0 * area_inter.float() / (2.220446049250313e-16 + area_union.float())
        ious += iou
        cls_count[torch.nonzero(area_union).squeeze(-1)] += 1
        precision = area_inter / area_pred
        recall = area_inter / area_lab
        fscore = (1 + beta2) * precision * recall / (beta2 * precision + recall)
        fscore[torch.isnan(fscore)] = 0.0
        fscores += fscore
    return ious, fscores, cls_count


def official_figures(root: Path, split: str, pred_dir: Path, batch_size: int = 4) -> dict[str, float]:
    """``test.py``'s miou and F_score on ``split``, and its last per-batch print (classes present)."""
    pal = get_palette()
    with open(root / "metadata.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split]
    miou_pc, fs_pc, cls_pc = torch.zeros(71), torch.zeros(71), torch.zeros(71)
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        masks = torch.cat([video_labels(root / r["label"] / r["uid"] / "labels_rgb", pal) for r in batch])
        output = torch.cat([video_predictions(pred_dir / r["uid"], r["uid"], pal) for r in batch])
        output = torch.softmax(output, dim=1)
        a, b, c = batch_miou_fscore(output, masks, 71)
        miou_pc += a
        cls_pc += c
        fs_pc += b
        batch_iou = miou_pc / cls_pc
        batch_iou[torch.isnan(batch_iou)] = 0
        present_iou = (torch.sum(batch_iou) / torch.sum(cls_pc != 0)).item()
        batch_f = fs_pc / cls_pc
        batch_f[torch.isnan(batch_f)] = 0
        present_f = (torch.sum(batch_f) / torch.sum(cls_pc != 0)).item()
    miou_pc = miou_pc / cls_pc
    miou_pc[torch.isnan(miou_pc)] = 0
    f_pc = fs_pc / cls_pc
    f_pc[torch.isnan(f_pc)] = 0
    return {
        "miou": torch.mean(miou_pc).item(),
        "fscore": torch.mean(f_pc).item(),
        "miou_present": present_iou,
        "fscore_present": present_f,
        "miou_no_bg": torch.mean(miou_pc[1:]).item(),
    }
