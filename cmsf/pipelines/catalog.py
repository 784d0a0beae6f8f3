"""Every pipeline by name, per-frame (:mod:`cmsf.pipelines.per_frame`) and tracked
(:mod:`cmsf.pipelines.tracked`), and running a batch of videos with any of them: what the runs
and the command call. Their settings are :data:`cmsf.pipelines.settings.SETTINGS`' classes.
"""

from __future__ import annotations

from collections import ChainMap
from typing import Callable, Mapping, Optional, Sequence

from cmsf.models.loading import Models
from cmsf.pipelines import per_frame
from cmsf.pipelines.results import SegmentationResult, VideoInput
from cmsf.pipelines.settings import PipelineSettings
from cmsf.pipelines.tracked import TRACKED_FUNCTIONS, TRACKED_PIPELINES, run_tracked_videos

__all__ = ["PIPELINES", "run_videos"]

PIPELINES: Mapping[str, Callable[..., SegmentationResult]] = ChainMap(TRACKED_FUNCTIONS, per_frame.PIPELINES)
"""Every pipeline by name (the per-frame ones first): each runs one video (``frames, waveform,
sample_rate, models``) with its keyword-only settings or ``settings=``. A live view of
:data:`cmsf.pipelines.per_frame.PIPELINES` and :data:`cmsf.pipelines.tracked.TRACKED_FUNCTIONS`."""


def run_videos(
    pipeline: str, videos: Sequence[VideoInput], models: Models, settings: Optional[PipelineSettings] = None
) -> list[SegmentationResult]:
    """Run ``pipeline`` on several videos at once (every model sees all their frames in one
    batch); each result is what the pipeline gives for its video alone
    (:func:`cmsf.pipelines.per_frame.run_videos`, :func:`cmsf.pipelines.tracked.run_tracked_videos`)."""
    if isinstance(pipeline, str) and pipeline in TRACKED_PIPELINES:
        return run_tracked_videos(pipeline, videos, models, settings)
    return per_frame.run_videos(pipeline, videos, models, settings)
