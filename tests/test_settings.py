"""The pipelines' settings objects (cmsf.pipelines.settings): checked when built (and when varied),
parsed from text, recorded in field order, picklable, and the sweep rules of their fields."""

from __future__ import annotations

import dataclasses
import inspect
import math
import pickle
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cmsf
from cmsf.models.loading import load_models
from cmsf.ops import BIND_MODES
from cmsf.pipelines.catalog import PIPELINES
from cmsf.pipelines.settings import (
    FREE,
    LOWEST,
    RERUN,
    SETTINGS,
    AtGdinoSamSettings,
    AtSam3Settings,
    OwodBindSettings,
    SamBindSettings,
    make_settings,
    resolve_settings,
    settings_for,
    sweep_rules,
)
from cmsf.stages.binding import CROP_BACKGROUNDS

RECORDED_KEYS = {
    "owod-bind": ["box_threshold", "bind_threshold", "bind_mode", "proposal_nms_threshold", "max_proposals", "crop_background"],
    "sam-bind": ["nms_threshold", "bind_threshold", "bind_mode", "points_per_side", "pred_iou_threshold",
                 "stability_score_threshold", "crop_background"],
    "at-gdino-sam": ["tag_threshold", "box_threshold", "text_threshold"],
    "at-sam3": ["tag_threshold", "instance_threshold", "mask_threshold"],
}  # fmt: skip
TRACKED_KEYS = ["track_merge_iou", "temporal_window", "track_threshold"]
RECORDED_KEYS["owod-bind-tracked"] = RECORDED_KEYS["owod-bind"] + TRACKED_KEYS
RECORDED_KEYS["sam-bind-tracked"] = RECORDED_KEYS["sam-bind"] + TRACKED_KEYS
"""The keys run.json, summary.json and evidence.json held before the settings were objects, in order."""


def test_registry_and_record_order():
    assert list(SETTINGS) == list(PIPELINES)
    for pipeline, cls in SETTINGS.items():
        assert cls.pipeline == pipeline
        assert list(dataclasses.asdict(cls())) == RECORDED_KEYS[pipeline]
    assert dataclasses.asdict(OwodBindSettings()) == {
        "box_threshold": 0.5, "bind_threshold": 0.7, "bind_mode": None, "proposal_nms_threshold": 0.5,
        "max_proposals": 300, "crop_background": "blur",
    }  # fmt: skip
    assert dataclasses.asdict(SamBindSettings())["pred_iou_threshold"] == 0.88
    assert dataclasses.asdict(AtGdinoSamSettings()) == {"tag_threshold": 0.5, "box_threshold": 0.35, "text_threshold": 0.25}
    assert {"OwodBindSettings", "SamBindSettings", "AtGdinoSamSettings", "AtSam3Settings"} <= set(cmsf.__all__)


@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_the_one_video_functions_keep_their_keywords_and_defaults(pipeline):
    """Each keyword setting of the one-video function is a field with the same default (no drift)."""
    parameters = inspect.signature(PIPELINES[pipeline]).parameters
    keywords = {k: p.default for k, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and k != "settings"}
    assert keywords == dataclasses.asdict(SETTINGS[pipeline]())


@pytest.mark.parametrize(
    "cls, changes, message",
    [
        (OwodBindSettings, {"box_threshold": 1.5}, "box_threshold: expected a number in [0, 1], got 1.5"),
        (OwodBindSettings, {"bind_threshold": -0.5}, "bind_threshold: expected a number in [0, 1]"),
        (OwodBindSettings, {"bind_mode": "cosine", "bind_threshold": -1.5}, "bind_threshold: expected a number in [-1, 1]"),
        (OwodBindSettings, {"bind_mode": "cos", "box_threshold": 2.0}, "bind_mode: expected one of softmax, cosine"),
        (OwodBindSettings, {"max_proposals": 0}, "max_proposals: expected a positive integer, got 0"),
        (OwodBindSettings, {"max_proposals": True}, "max_proposals: expected a positive integer"),
        (OwodBindSettings, {"proposal_nms_threshold": float("nan")}, "proposal_nms_threshold: expected a number"),
        (OwodBindSettings, {"crop_background": "grey"}, "crop_background: expected one of blur, black, got 'grey'"),
        (SamBindSettings, {"points_per_side": 2.5}, "points_per_side: expected a positive integer"),
        (SamBindSettings, {"stability_score_threshold": "0.9"}, "stability_score_threshold: expected a number"),
        (AtGdinoSamSettings, {"text_threshold": 1.01}, "text_threshold: expected a number in [0, 1]"),
        (AtSam3Settings, {"tag_threshold": -0.01}, "tag_threshold: expected a number in [0, 1]"),
        (AtSam3Settings, {"mask_threshold": None}, "mask_threshold: expected a number in [0, 1]"),
    ],
)
def test_a_bad_value_is_refused_when_built_and_when_varied(cls, changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        cls(**changes)
    with pytest.raises(ValueError, match=re.escape(message)):
        dataclasses.replace(cls(), **changes)  # replace checks the new object again
    with pytest.raises(ValueError, match=re.escape(message)):
        cls().varied(changes)


def test_an_unknown_key_lists_the_valid_ones():
    expected = ("nonsense: at-sam3 has no setting 'nonsense'; it accepts: tag_threshold (default 0.5), "
                "instance_threshold (default 0.5), mask_threshold (default 0.5)")  # fmt: skip
    for attempt in (
        lambda: AtSam3Settings.of({"nonsense": 1}),
        lambda: AtSam3Settings.parse({"nonsense": "1"}),
        lambda: AtSam3Settings().varied({"nonsense": 1}),
        lambda: make_settings("at-sam3", {"nonsense": 1}),
    ):
        with pytest.raises(ValueError) as caught:
            attempt()
        assert str(caught.value) == expected
    names = "owod-bind, sam-bind, at-gdino-sam, at-sam3, owod-bind-tracked, sam-bind-tracked"
    with pytest.raises(ValueError, match=f"pipeline: expected one of {names}, got 'owod-bond'"):
        make_settings("owod-bond")


def test_parse_types_after_the_fields():
    parsed = SamBindSettings.parse({"points_per_side": "8", "bind_threshold": "-0.5", "bind_mode": "cosine"})
    assert parsed == SamBindSettings(points_per_side=8, bind_threshold=-0.5, bind_mode="cosine")
    assert type(parsed.points_per_side) is int and type(parsed.bind_threshold) is float
    for values, message in [
        ({"points_per_side": "8.5"}, "points_per_side: expected an integer, got '8.5'"),
        ({"bind_threshold": "x"}, "bind_threshold: expected a number, got 'x'"),
        ({"bind_threshold": "inf"}, "bind_threshold: expected a finite number, got 'inf'"),
        ({"crop_background": "grey"}, "crop_background: expected one of blur, black"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            SamBindSettings.parse(values)
    assert SamBindSettings.parse({}) == SamBindSettings()


def test_changed_settings_for_and_pickling():
    settings_ = OwodBindSettings(box_threshold=0.3, crop_background="black", bind_threshold=0.7)
    assert settings_.changed() == {"box_threshold": 0.3, "crop_background": "black"}  # field order, defaults left out
    assert pickle.loads(pickle.dumps(settings_)) == settings_  # segment-many's Ray workers receive them
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings_.box_threshold = 0.1  # type: ignore[misc]
    assert settings_for("owod-bind", None) == OwodBindSettings()
    assert settings_for("owod-bind", settings_) is settings_
    for wrong in (SamBindSettings(), {"box_threshold": 0.3}):
        with pytest.raises(ValueError, match="settings: expected OwodBindSettings .* or None, got a"):
            settings_for("owod-bind", wrong)  # type: ignore[arg-type]


def test_sweep_rules_are_the_fields_metadata():
    assert sweep_rules(OwodBindSettings) == {
        "box_threshold": LOWEST, "bind_threshold": FREE, "bind_mode": FREE, "proposal_nms_threshold": RERUN,
        "max_proposals": RERUN, "crop_background": RERUN,
    }  # fmt: skip
    assert {k: v for k, v in sweep_rules(SamBindSettings()).items() if v != RERUN} == {
        "bind_threshold": FREE, "bind_mode": FREE, "pred_iou_threshold": LOWEST,
    }  # fmt: skip
    assert sweep_rules(AtGdinoSamSettings) == {"tag_threshold": RERUN, "box_threshold": LOWEST, "text_threshold": FREE}
    assert set(sweep_rules(AtSam3Settings).values()) == {RERUN}


def test_resolve_settings_returns_a_new_object():
    models = load_models("tiny", device="cpu")  # lazy: ImageBind's kind is known without loading it
    given_ = OwodBindSettings(bind_threshold=0.6)
    resolved = resolve_settings(given_, models)
    assert resolved == OwodBindSettings(bind_threshold=0.6, bind_mode="softmax") and given_.bind_mode is None
    with pytest.raises(ValueError, match="bind_mode: 'calibrated' needs"):
        resolve_settings(OwodBindSettings(bind_mode="calibrated"), models)
    tagged = AtSam3Settings(tag_threshold=0.2)
    assert resolve_settings(tagged, models) is tagged


def test_settings_or_keywords_not_both():
    models = load_models("tiny", device="cpu")
    with pytest.raises(ValueError, match=r"settings: give the settings either .* \(box_threshold=0.3\)"):
        cmsf.owod_bind(None, None, 16000, models, box_threshold=0.3, settings=OwodBindSettings())
    with pytest.raises(ValueError, match="bind_threshold"):  # the keywords are checked before any input
        cmsf.owod_bind(None, None, 16000, models, bind_threshold=7.0)
    with pytest.raises(ValueError, match="settings: expected AtSam3Settings"):
        cmsf.at_sam3(None, None, 16000, models, settings=AtGdinoSamSettings())
    with pytest.raises(ValueError, match=r"settings: give the settings either .* \(temporal_window=3\)"):
        cmsf.owod_bind_tracked(None, None, 16000, models, temporal_window=3, settings=cmsf.OwodBindTrackedSettings())
    with pytest.raises(ValueError, match="settings: expected SamBindTrackedSettings"):
        cmsf.sam_bind_tracked(None, None, 16000, models, settings=OwodBindSettings())


# ---------------------------------------------------------------- parse(text) == construction
unit = st.floats(0.0, 1.0, allow_nan=False)


def _values(cls: type) -> st.SearchStrategy[dict]:
    """Random valid values of every field of ``cls``."""
    fields = {
        "bind_mode": st.sampled_from([*BIND_MODES]),
        "max_proposals": st.integers(1, 10_000),
        "points_per_side": st.integers(1, 256),
        "crop_background": st.sampled_from(CROP_BACKGROUNDS),
        "temporal_window": st.integers(0, 50),
    }
    names = [f.name for f in dataclasses.fields(cls)]
    moded = [name for name in ("bind_threshold", "track_threshold") if name in names]  # ranges depend on bind_mode
    values = st.fixed_dictionaries({name: fields.get(name, unit) for name in names if name not in moded})
    if not moded:
        return values

    def thresholds(v: dict) -> st.SearchStrategy[dict]:
        low = -1.0 if v["bind_mode"] == "cosine" else 0.0
        return st.fixed_dictionaries({name: st.floats(low, 1.0) for name in moded}).map(lambda t: {**v, **t})

    return values.flatmap(thresholds)


@pytest.mark.parametrize("cls", list(SETTINGS.values()))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_parse_of_the_text_form_equals_construction(cls, data):
    values = data.draw(_values(cls))
    built = cls(**values)
    text = {key: repr(value) if isinstance(value, float) else str(value) for key, value in values.items()}
    parsed = cls.parse(text)
    assert parsed == built and dataclasses.asdict(parsed) == dataclasses.asdict(built)
    assert all(type(a) is type(b) for a, b in zip(dataclasses.astuple(parsed), dataclasses.astuple(built)))
    subset = data.draw(st.sets(st.sampled_from(sorted(values))))
    if subset & {"bind_threshold", "track_threshold"}:
        subset.add("bind_mode")  # a negative bind_threshold is valid with bind_mode="cosine" only
    assert cls.parse({key: text[key] for key in subset}) == cls.of({key: values[key] for key in subset})
    assert all(math.isfinite(v) for v in dataclasses.astuple(parsed) if isinstance(v, float))
