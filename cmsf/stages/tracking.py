"""Object tracking through a video with SAM 2's memory (the ``tracker`` component):
:func:`track_masks` carries each object, given as a mask on one frame, to every frame.

It runs as transformers' own video API runs it (``Sam2VideoProcessor.init_video_session``,
``add_inputs_to_inference_session`` with the object's mask, the model on the prompted frame, then
``propagate_in_video_iterator`` forward to the last frame and with ``reverse=True`` back to the
first, ``post_process_masks`` to the frame size), with two savings that change no result:

- every frame is encoded once per video: one session keeps every frame's image features
  (``max_vision_features_cache_size`` = T) and is reset between passes
  (``reset_tracking_data`` keeps the cache), where each pass alone would encode its frames
  again (and, with transformers' default cache of one frame, the reverse pass once more);
- objects prompted on the same frame are tracked in one pass: transformers decodes and tracks
  each object of a session with its own memory and batches only their memory encoding, so an
  object's masks are those it gets alone (``tests/test_tracking.py`` compares them). Objects
  prompted on different frames are never in one pass: a pass propagates from its earliest
  prompted frame, where an object prompted later would be tracked before its prompt.

Memory: the session holds T frames' features (SAM 2.1 Hiera-L at 1024 px: about 100 MB a frame
in float32, on ``models.device``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from cmsf.io.inputs import Images, as_image_list, as_mask
from cmsf.models.families import families_of
from cmsf.models.loading import Models, check_models

__all__ = ["TRACKER_FAMILIES", "TrackedMasks", "check_prompts", "track_masks"]

TRACKER_FAMILIES = tuple(family.name for family in families_of("tracker"))
"""The ``tracker`` component's families (config ``model_type``, from
:data:`cmsf.models.families.FAMILY_TABLE`) that :func:`track_masks` runs."""


@dataclass(frozen=True)
class TrackedMasks:
    """K objects tracked through T frames.

    Attributes:
        masks: ``Tensor[K, T, H, W]`` bool at the frames' resolution, CPU: object k in frame t.
        object_scores: ``Tensor[K, T]`` float32, CPU: the tracker's probability that object k is
            present in frame t (sigmoid of SAM 2's object-score logit; below 0.5 its mask is empty).
        seed_frames: the frame each object was prompted on.
    """

    masks: Tensor
    object_scores: Tensor
    seed_frames: tuple[int, ...]

    def __len__(self) -> int:
        return int(self.masks.shape[0])


def check_prompts(prompts: Any, num_frames: int, frame_size: tuple[int, int]) -> list[tuple[int, Tensor]]:
    """``prompts`` as a list of ``(frame_index, Tensor[H, W] bool)``, each checked: a frame index
    in ``[0, num_frames)``, a 2-D mask of ``frame_size``.

    Raises:
        ValueError: anything else; the message names ``prompts[k]``.
    """
    if not isinstance(prompts, (list, tuple)):
        expected = "a sequence of (frame_index, Tensor[H, W] bool)"
        raise ValueError(f"prompts: expected {expected}, got {type(prompts).__name__}")
    checked = []
    for k, prompt in enumerate(prompts):
        if not isinstance(prompt, (list, tuple)) or len(prompt) != 2:
            raise ValueError(f"prompts[{k}]: expected a pair (frame_index, Tensor[H, W] bool), got {prompt!r:.80}")
        frame, mask = prompt
        if isinstance(frame, bool) or not isinstance(frame, int) or not 0 <= frame < num_frames:
            raise ValueError(f"prompts[{k}]: expected a frame index in [0, {num_frames}), got {frame!r}")
        mask = as_mask(mask, f"prompts[{k}] mask")
        if tuple(mask.shape) != tuple(frame_size):
            raise ValueError(
                f"prompts[{k}]: expected a mask of the frames' size {tuple(frame_size)}, got {tuple(mask.shape)}"
            )
        checked.append((frame, mask))
    return checked


def track_masks(frames: Images, prompts: Sequence[tuple[int, Tensor]], models: Models) -> TrackedMasks:
    """Track K objects through a video with ``models.tracker`` (SAM 2 / 2.1 or EdgeTAM video).

    Object k is prompted with its mask on its frame and propagated forward to the last frame,
    then in reverse to the first, as transformers' video API does for it alone (see the module
    docstring for what is shared between objects).

    Args:
        frames: the video, ``Tensor[T, 3, H, W]`` uint8 or a list of T ``Tensor[3, H, W]`` uint8 /
            PIL images of one size.
        prompts: one ``(frame_index, Tensor[H, W] bool)`` per object.
        models: from :func:`cmsf.load_models`; runs on ``models.device`` in ``models.dtype``.

    Returns:
        :class:`TrackedMasks` (K = 0: empty tensors, and the tracker is not loaded).

    Raises:
        ValueError: frames of different sizes, or a prompt refused by :func:`check_prompts`.
    """
    models = check_models(models)
    images = as_image_list(frames, "frames")
    sizes = {tuple(image.shape[-2:]) for image in images}
    if len(sizes) != 1:
        raise ValueError(f"frames: expected frames of one size, got sizes {sorted(sizes)}")
    height, width = sizes.pop()
    checked = check_prompts(prompts, len(images), (height, width))
    count, num_frames = len(checked), len(images)
    masks = torch.zeros(count, num_frames, height, width, dtype=torch.bool)
    scores = torch.zeros(count, num_frames, dtype=torch.float32)
    if count:
        _track(torch.stack([image.cpu() for image in images]), checked, models, masks, scores)
    return TrackedMasks(masks=masks, object_scores=scores, seed_frames=tuple(frame for frame, _ in checked))


def _track(video: Tensor, prompts: list[tuple[int, Tensor]], models: Models, masks: Tensor, scores: Tensor) -> None:
    """Fill ``masks`` ``[K, T, H, W]`` and ``scores`` ``[K, T]`` in place: one pass per prompted
    frame over one session whose feature cache holds every frame."""
    tracker = models.tracker
    model, processor = tracker.model, tracker.processor
    num_frames, height, width = video.shape[0], video.shape[-2], video.shape[-1]
    with torch.inference_mode():
        session = processor.init_video_session(
            video=video,
            inference_device=models.device,
            dtype=models.dtype,
            max_vision_features_cache_size=num_frames,
        )
        for seed in sorted({frame for frame, _ in prompts}):
            objects = [k for k, (frame, _) in enumerate(prompts) if frame == seed]
            session.reset_tracking_data()  # a fresh memory; the frames' features stay cached
            processor.add_inputs_to_inference_session(
                inference_session=session,
                frame_idx=seed,
                obj_ids=list(objects),
                input_masks=[prompts[k][1] for k in objects],
            )
            outputs = [model(inference_session=session, frame_idx=seed)]
            outputs += model.propagate_in_video_iterator(session, start_frame_idx=seed)
            outputs += model.propagate_in_video_iterator(session, start_frame_idx=seed, reverse=True)
            for output in outputs:
                frame_masks = processor.post_process_masks(
                    [output.pred_masks], original_sizes=[[height, width]], binarize=False
                )[0]
                rows = torch.tensor(output.object_ids)  # an object's id is its index in prompts
                masks[rows, output.frame_idx] = (frame_masks[:, 0] > 0.0).cpu()
                scores[rows, output.frame_idx] = torch.sigmoid(output.object_score_logits.float().reshape(-1)).cpu()
