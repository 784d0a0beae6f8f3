"""What a run would load, without loading it: :func:`describe_models` lists each component the
chosen pipelines use, with its source, family and class, dtype, parameter count, and where its
weights are (built in code, a local path, the Hugging Face cache) or that they must be downloaded.

Parameter counts are those of the model built from its config on the ``meta`` device (no memory,
no weights); a hub checkpoint that is not cached has no config here, so its family, class and
count are unknown until it is downloaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import transformers
from huggingface_hub import HfApi
from huggingface_hub import constants as hub_constants
from torch import nn

from cmsf.checks import dtype_name
from cmsf.models.families import family_named, family_of
from cmsf.models.hub import KNOWN_GATED, cache_entry, gated_remedy, quiet_type_mismatch
from cmsf.models.imagebind import CHECKPOINT_URL, ImageBind, checkpoint_candidates, find_checkpoint
from cmsf.models.loading import FAMILIES, IMAGEBIND_BINDER, Models
from cmsf.models.mavl import MAVL, PAPER_MAVL, TINY_MAVL

__all__ = ["PIPELINE_COMPONENTS", "ModelRow", "describe_models", "pipeline_components"]

PIPELINE_COMPONENTS: dict[str, tuple[str, ...]] = {
    "owod-bind": ("proposer", "sam", "binder"),
    "sam-bind": ("sam", "binder"),
    "at-gdino-sam": ("ast", "grounding_dino", "sam"),
    "at-sam3": ("ast", "sam3"),
    "owod-bind-tracked": ("proposer", "sam", "binder", "tracker"),
    "sam-bind-tracked": ("sam", "binder", "tracker"),
}
"""The components each pipeline loads (``proposer``: OWLv2 or MAVL, :attr:`Models.proposer`;
``binder``: ImageBind or PE-AV, :attr:`Models.binder_kind`)."""

_IMAGEBIND_BYTES = 4_500_000_000  # imagebind_huge.pth, all six modalities: about 4.5 GB

_CHECKPOINT_FILES: dict[str, tuple[Optional[int], Callable[[], str]]] = {
    "imagebind": (
        _IMAGEBIND_BYTES,
        lambda: f"download {CHECKPOINT_URL} to one of {', '.join(checkpoint_candidates())}, "
        "or pass --model imagebind=PATH",
    ),
    "mavl": (None, lambda: "download the authors' checkpoint by hand (README, MAVL)"),
}
"""The components that are no Hugging Face model but a checkpoint file: its download size when
known, and how to get it (said when asked: the candidate paths depend on the environment)."""


@dataclass(frozen=True)
class ModelRow:
    """One component a run would load.

    ``family``/``model_class``/``parameters`` are None when unknown (a hub checkpoint not in the
    cache); ``available`` says whether it loads without a download (built in code, a local file
    or folder, or in the Hugging Face cache); ``location`` is that place (or ``"must be
    downloaded"``); ``download_bytes`` the download's size when known; ``remedy`` what to do when
    it is not available (empty otherwise)."""

    component: str
    pipelines: tuple[str, ...]
    source: str
    family: Optional[str]
    model_class: Optional[str]
    dtype: str
    parameters: Optional[int]
    available: bool
    location: str
    download_bytes: Optional[int]
    remedy: str


def pipeline_components(models: Models, pipelines: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The components ``pipelines`` load, in order of first use, each with the pipelines using it.

    Raises:
        ValueError: an unknown pipeline (the message starts with ``"pipelines:"``).
    """
    unknown = [p for p in pipelines if p not in PIPELINE_COMPONENTS]
    if unknown or not pipelines:
        raise ValueError(f"pipelines: expected some of {', '.join(PIPELINE_COMPONENTS)}, got {list(pipelines)}")
    used: dict[str, list[str]] = {}
    for pipeline in pipelines:
        for role in PIPELINE_COMPONENTS[pipeline]:
            name = models.proposer if role == "proposer" else role
            if models.spec(name).kind == "component":  # the binder ImageBind: the imagebind component
                name = str(models.spec(name).source)
            used.setdefault(name, []).append(pipeline)
    return {name: tuple(users) for name, users in used.items()}


def _count(build: Callable[[], nn.Module]) -> Optional[int]:
    try:
        with torch.device("meta"):
            model = build()
    except Exception:  # noqa: BLE001 - a count is informative only
        return None
    return sum(p.numel() for p in model.parameters())


def _random_row(models: Models, name: str) -> tuple[str, str, Optional[int]]:
    spec = models.spec(name)
    own = {
        "imagebind": lambda: (IMAGEBIND_BINDER, "ImageBind", _count(lambda: ImageBind(**dict(spec.sizes or ())))),
        "mavl": lambda: ("mavl", "MAVL", _count(lambda: MAVL(TINY_MAVL if spec.size == "tiny" else PAPER_MAVL))),
    }.get(name)
    if own is not None:
        return own()
    family = family_named(name, str(spec.family))
    config = family.random.config(str(spec.size))
    return family.name, family.model_class, _count(lambda: getattr(transformers, family.model_class)(config))


def _hf_types(name: str, folder: str) -> tuple[Optional[str], Optional[str], Optional[int], str]:
    """Family, class and parameter count of the checkpoint in ``folder`` (a local copy or a cached
    snapshot), and what is wrong with it (empty when nothing)."""
    try:
        family = str(transformers.AutoConfig.from_pretrained(folder).model_type)
    except Exception as error:  # noqa: BLE001
        return None, None, None, f"its config cannot be read ({type(error).__name__}: {error})"
    entry = family_of(name, family)
    if entry is None or entry.model_class is None:
        accepted = ", ".join(FAMILIES[name])
        return family, None, None, f"component {name!r} does not accept model_type {family!r} (accepts {accepted})"
    model_class = getattr(transformers, entry.model_class)
    with quiet_type_mismatch(family):
        config = model_class.config_class.from_pretrained(folder)
    return family, model_class.__name__, _count(lambda: model_class(config)), ""


def _download_size(repo_id: str) -> Optional[int]:
    """The size of ``repo_id``'s files on the hub, asked only when not offline (HF_HUB_OFFLINE)."""
    if hub_constants.HF_HUB_OFFLINE:
        return None
    try:
        info = HfApi().model_info(repo_id, files_metadata=True)
        other_formats = (".bin", ".h5", ".msgpack")  # transformers loads the safetensors copy
        return sum(int(s.size or 0) for s in info.siblings or [] if not s.rfilename.endswith(other_formats))
    except Exception:  # noqa: BLE001 - a size is informative only
        return None


def _hub_remedy(name: str, source: str) -> str:
    gated = f"{gated_remedy(source)}; then " if source in KNOWN_GATED else ""
    return gated + (
        f"run once with internet access (the first use downloads {source} into the Hugging Face cache, "
        f"HF_HOME), or `hf download {source}` on a machine that has it and copy the cache, or pass a local "
        f"save_pretrained folder: --model {name}=PATH"
    )


def _pretrained_row(models: Models, name: str) -> ModelRow:
    spec = models.spec(name)
    base = dict(component=name, source=models.source(name), dtype=dtype_name(models.dtype))
    if name in _CHECKPOINT_FILES:
        path = spec.source if spec.source is not None else find_checkpoint()
        found = path is not None and os.path.isfile(path)
        download_bytes, how = _CHECKPOINT_FILES[name]
        size = None if found else download_bytes
        remedy = "" if found else how()
        family, model_class, count = _random_row(models, name) if name == "mavl" else (
            IMAGEBIND_BINDER, "ImageBind", _count(lambda: ImageBind())
        )  # fmt: skip
        return ModelRow(**base, family=family, model_class=model_class, parameters=count, available=found,
                        location=os.path.abspath(path) if found else "must be downloaded", download_bytes=size,
                        remedy=remedy, pipelines=())  # fmt: skip
    source = str(spec.source)
    if os.path.isdir(source):
        folder, size = source, None
    else:
        entry = cache_entry(source)
        folder, size = entry.path, entry.size_bytes
    if folder is None:
        return ModelRow(**base, family=None, model_class=None, parameters=None, available=False,
                        location="must be downloaded", download_bytes=_download_size(source),
                        remedy=_hub_remedy(name, source), pipelines=())  # fmt: skip
    family, model_class, count, problem = _hf_types(name, folder)
    return ModelRow(**base, family=family, model_class=model_class, parameters=count, available=not problem,
                    location=folder, download_bytes=None if os.path.isdir(source) else size, remedy=problem,
                    pipelines=())  # fmt: skip


def describe_models(models: Models, pipelines: Sequence[str] = tuple(PIPELINE_COMPONENTS)) -> list[ModelRow]:
    """One :class:`ModelRow` per component ``pipelines`` (default: all four) would load with
    ``models``, in order of first use; nothing is loaded or downloaded (offline, a hub
    checkpoint's download size is unknown).

    Raises:
        ValueError: an unknown pipeline (the message starts with ``"pipelines:"``).
    """
    rows = []
    for name, users in pipeline_components(models, pipelines).items():
        spec = models.spec(name)
        if spec.kind == "random":
            family, model_class, count = _random_row(models, name)
            row = ModelRow(component=name, pipelines=users, source=models.source(name), family=family,
                           model_class=model_class, dtype=dtype_name(models.dtype), parameters=count, available=True,
                           location="built in code (seeded random weights)", download_bytes=None,
                           remedy="")  # fmt: skip
        else:
            row = _pretrained_row(models, name)
            row = ModelRow(**{**row.__dict__, "pipelines": users})
        rows.append(row)
    return rows
