"""Checkpoints the way the hub ships them (tests/hub_checkpoints.py): for every hub id cmsf names,
a tiny random model of exactly its published model and processor classes, saved with
``save_pretrained``, loads as its component and one stage runs on it; SAM 2.1 / EdgeTAM / SAM 3
video checkpoints give the masks transformers' own image classes give from the same folder; a
gated checkpoint says how to get access."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import httpx2
import pytest
import torch
import transformers
from huggingface_hub.errors import GatedRepoError

from cmsf.models.hub import gated_remedy, is_gated, quiet_type_mismatch
from cmsf.models.loading import FAMILIES, PAPER_SOURCES, SOURCES_2025, ModelLoadError, load_models
from cmsf.models.random_families import FULL_CHECKPOINTS
from cmsf.stages.binding import binder_of
from cmsf.stages.concepts import segment_concepts
from cmsf.stages.grounding import ground
from cmsf.stages.proposals import propose_boxes
from cmsf.stages.segmentation import sam_masks
from cmsf.stages.tagging import tag_audio
from tests.hub_checkpoints import HUB_CHECKPOINTS, HubCheckpoint, save_hub_like

README = Path(__file__).resolve().parent.parent / "README.md"
BY_ID = {entry.hub_id: entry for entry in HUB_CHECKPOINTS}


def _images() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in ((48, 80), (70, 50))]


def test_every_hub_id_cmsf_names_has_one_entry():
    named = {s for s in (*PAPER_SOURCES.values(), *SOURCES_2025.values(), *FULL_CHECKPOINTS.values()) if s and "/" in s}
    named |= set(re.findall(r"\b(?:facebook|google|MIT|IDEA-Research|openmmlab-community|yonigozlan|syscv-community)"
                            r"/[A-Za-z0-9_.-]*[A-Za-z0-9]", README.read_text(encoding="utf-8")))  # fmt: skip
    named.discard("facebook/sam2.1-hiera")  # the README's "facebook/sam2.1-hiera-tiny … -large" family
    assert named == set(BY_ID)
    for entry in HUB_CHECKPOINTS:
        assert entry.model_type in FAMILIES[entry.component] and entry.source


def _saved_types(folder: Path) -> tuple[str, tuple[str, ...], str, set[str]]:
    config = json.loads((folder / "config.json").read_text())
    names = {"processor_config.json", "preprocessor_config.json"}
    saved = {p.name: json.loads(p.read_text()) for p in folder.iterdir() if p.name in names}
    if "processor_config.json" in saved:
        processor = saved["processor_config.json"]
        keys = ("image_processor_type", "video_processor_type", "feature_extractor_type")
        parts = {value.get(key) for value in processor.values() if isinstance(value, dict) for key in keys} - {None}
        return config["model_type"], tuple(config["architectures"]), processor["processor_class"], parts
    only = saved["preprocessor_config.json"]
    return config["model_type"], tuple(config["architectures"]), only.get("feature_extractor_type"), set()


def _plain(name: str) -> str:
    return name.removesuffix("Fast")  # transformers 5 saves the fast image processors under the plain name


@pytest.fixture(scope="module", params=[entry.hub_id for entry in HUB_CHECKPOINTS])
def saved(request, tmp_path_factory) -> tuple[HubCheckpoint, Path]:
    entry = BY_ID[request.param]
    return entry, save_hub_like(entry, tmp_path_factory.mktemp(entry.model_type))


def _one_stage(entry: HubCheckpoint, models) -> None:
    images = _images()
    if entry.component == "ast":
        tags = tag_audio([0.1 * torch.randn(8000, generator=torch.Generator().manual_seed(1))], 16000, models, 0.0)
        assert len(tags) == 1 and len(tags[0]) > 0
    elif entry.component == "grounding_dino":
        assert len(ground(images, [["dog"], ["speech"]], models, box_threshold=0.0)) == 2
    elif entry.component == "sam":
        boxes = [torch.tensor([[2.0, 3.0, 40.0, 30.0]]), torch.tensor([[5.0, 5.0, 45.0, 60.0]])]
        masks = sam_masks(images, models, boxes=boxes)
        assert [tuple(m.masks.shape) for m in masks] == [(1, 48, 80), (1, 70, 50)]
    elif entry.component == "owlv2":
        assert len(propose_boxes(images, models, threshold=0.0)) == 2
    elif entry.component == "sam3":
        assert len(segment_concepts(images, [["dog"], ["speech"]], models, threshold=0.0)) == 2
    else:
        binder = binder_of(models)
        assert binder.embed_vision(images).shape[0] == 2
        assert binder.embed_audio([0.1 * torch.randn(4800)], 48000).shape[0] == 1


def test_a_checkpoint_saved_as_the_hub_has_it_loads_and_runs(saved):
    entry, folder = saved
    model_type, architectures, processor, parts = _saved_types(folder)
    assert (model_type, architectures) == (entry.model_type, entry.architectures)
    assert processor == entry.processor
    assert {_plain(p) for p in parts} <= {_plain(p) for p in entry.parts}
    records = _Records()
    logging.getLogger("transformers").addHandler(records)
    try:
        models = load_models("tiny", device="cpu", **{entry.component: str(folder)})
        models.get(entry.component)
    finally:
        logging.getLogger("transformers").removeHandler(records)
    assert not [m for m in records.messages if "to instantiate a model of type" in m]  # the expected one is silenced
    _one_stage(entry, models)


@pytest.mark.parametrize(
    ("hub_id", "image_class", "processor_class"),
    [
        ("facebook/sam2.1-hiera-large", transformers.Sam2Model, transformers.Sam2Processor),
        ("yonigozlan/EdgeTAM-hf", transformers.EdgeTamModel, transformers.Sam2Processor),
    ],
)
def test_video_checkpoints_give_the_masks_of_transformers_image_classes(hub_id, image_class, processor_class, tmp_path):
    folder = save_hub_like(BY_ID[hub_id], tmp_path)
    models = load_models("tiny", device="cpu", sam=str(folder))
    assert type(models.sam.model) is image_class
    reference = image_class.from_pretrained(folder).eval()
    processor = processor_class.from_pretrained(folder)
    images, boxes = _images(), [[[2.0, 3.0, 40.0, 30.0]], [[5.0, 5.0, 45.0, 60.0]]]
    ours = sam_masks(images, models, boxes=[torch.tensor(b) for b in boxes])
    for image, box, got in zip(images, boxes, ours):
        inputs = processor(images=image, input_boxes=[box], return_tensors="pt")
        with torch.no_grad():
            out = reference(
                pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"], multimask_output=False
            )
        (expected,) = processor.post_process_masks(out.pred_masks, inputs["original_sizes"])
        assert torch.equal(got.masks, expected[:, 0])
        torch.testing.assert_close(got.iou_scores, out.iou_scores[0, :, 0], rtol=0, atol=1e-6)


def test_a_sam3_video_checkpoint_gives_the_instances_of_sam3_model(tmp_path):
    folder = save_hub_like(BY_ID["facebook/sam3"], tmp_path)
    models = load_models("tiny", device="cpu", sam3=str(folder))
    assert type(models.sam3.model) is transformers.Sam3Model
    reference, processor = transformers.Sam3Model.from_pretrained(folder).eval(), transformers.Sam3Processor.from_pretrained(folder)
    images = _images()
    found = segment_concepts(images, [["dog"], ["speech"]], models, threshold=0.0)
    for image, concept, got in zip(images, ["dog", "speech"], found):
        inputs = processor(images=image, text=concept, return_tensors="pt")
        with torch.no_grad():
            out = reference(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"],
                            attention_mask=inputs["attention_mask"])  # fmt: skip
        (expected,) = processor.post_process_instance_segmentation(
            out, threshold=0.0, mask_threshold=0.5, target_sizes=[tuple(image.shape[1:])]
        )
        order = torch.sort(expected["scores"], descending=True, stable=True).indices
        assert len(got) == len(order) > 0
        assert torch.equal(got.scores, expected["scores"][order])
        assert torch.equal(got.masks, expected["masks"][order].bool())


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_the_type_warning_is_silenced_for_that_call_only():
    logger = logging.getLogger("transformers.configuration_utils")
    message = "You are using a model of type `sam2_video` to instantiate a model of type `sam2`. This may be expected"
    records = _Records()
    logger.addHandler(records)
    try:
        with quiet_type_mismatch("sam2_video"):
            logger.warning(message)
            logger.warning("another warning")
            logger.warning(message.replace("sam2_video", "sam3_video"))  # another family's: kept
        logger.warning(message)
    finally:
        logger.removeHandler(records)
    assert records.messages == ["another warning", message.replace("sam2_video", "sam3_video"), message]
    assert logger.filters == []


def _gated_error() -> GatedRepoError:
    """The error huggingface_hub raises for a gated repository, as transformers wraps it."""
    url = "https://huggingface.co/facebook/sam3/resolve/main/config.json"
    response = httpx2.Response(401, request=httpx2.Request("GET", url))
    try:
        raise GatedRepoError("401 Client Error. Cannot access gated repo for url …", response=response)
    except GatedRepoError as hub_error:
        try:
            raise OSError("You are trying to access a gated repo.\nMake sure to have access to it at "
                          "https://huggingface.co/facebook/sam3.") from hub_error  # fmt: skip
        except OSError as wrapped:
            return wrapped  # type: ignore[return-value]


def test_a_gated_checkpoint_says_to_accept_the_licence_and_log_in(monkeypatch):
    wrapped = _gated_error()
    assert is_gated(wrapped) and is_gated(wrapped.__cause__) and not is_gated(OSError("no such file"))

    def refuse(*args, **kwargs):
        raise wrapped

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", refuse)
    models = load_models("paper", device="cpu")
    with pytest.raises(ModelLoadError) as caught:
        models.get("sam3")
    text = str(caught.value)
    assert "https://huggingface.co/facebook/sam3" in text and "accept its licence" in text
    assert "hf auth login" in text and "HF_TOKEN" in text and gated_remedy("facebook/sam3") in text


def test_an_ungated_failure_keeps_the_cache_advice(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)
    with pytest.raises(ModelLoadError, match="HF_HOME") as caught:
        load_models("paper", device="cpu").get("sam")
    assert "licence" not in str(caught.value)
