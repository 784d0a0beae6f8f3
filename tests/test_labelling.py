"""The AudioSet → AVSS vocabulary table and the class decision (label_masks, class_map,
prompts_for_tags) against brute-force references."""

from __future__ import annotations

import csv
import io
import math
from importlib import resources

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cmsf.io.audioset import audioset_labels
from cmsf.io.vocabulary import AVSS_CLASS_NAMES, REASON_KINDS, VOCABULARY_COLUMNS, audioset_vocabulary, read_vocabulary
from cmsf.models.loading import load_models
from cmsf.stages.binding import TextEmbeddings, binder_of
from cmsf.stages.labelling import (
    CLASS_PHRASES,
    avss_class_name,
    class_map,
    class_prompts,
    label_masks,
    prompts_for_tags,
)

# AVSBench-semantic's label2idx.json: background first, then these 70 (1-based indices 2 … 71).
LABEL2IDX_ORDER = (
    "background accordion airplane axe baby bassoon bell bird boat boy bus car cat cello clarinet clipper clock "
    "dog donkey drum duck elephant emergency-car erhu flute frying-food girl goose guitar gun guzheng hair-dryer "
    "handpan harmonica harp helicopter hen horse keyboard leopard lion man marimba missile-rocket motorcycle mower "
    "parrot piano pig pipa saw saxophone sheep sitar sorna squirrel tabla tank tiger tractor train trombone truck "
    "trumpet tuba ukulele utv vacuum-cleaner violin wolf woman"
).split()


def shipped_rows() -> list[list[str]]:
    text = resources.files("cmsf").joinpath("data/audioset_vocabulary.csv").read_text(encoding="utf-8")
    return list(csv.reader(io.StringIO(text)))


# --------------------------------------------------------------------------------------------
# The vocabulary table
# --------------------------------------------------------------------------------------------


def test_every_audioset_label_once_in_order_with_valid_classes_and_reasons():
    header, *rows = shipped_rows()
    assert tuple(header) == VOCABULARY_COLUMNS
    assert [row[0] for row in rows] == audioset_labels()  # all 527, once each, in class-index order
    assert len(rows) == 527
    for label, noun, avss_class, reason, note in rows:
        if avss_class:
            assert avss_class in AVSS_CLASS_NAMES and noun and not reason, label
        else:
            assert reason.split(": ")[0] in REASON_KINDS and len(reason) > len("ambiguous: "), label
        assert noun == noun.strip() and noun == noun.lower(), label
        if not noun:
            assert reason.startswith(("no visible source: ", "genre or mood: ")), label


def test_avss_class_names_are_label2idx_order():
    assert ["background", *AVSS_CLASS_NAMES] == LABEL2IDX_ORDER and len(AVSS_CLASS_NAMES) == 70
    assert len(CLASS_PHRASES) == 70 and avss_class_name(0) is None and avss_class_name(70) == "woman"


def test_some_reviewed_rows():
    vocabulary = audioset_vocabulary()
    expected = {
        "Male speech, man speaking": ("man", "man"), "Female singing": ("woman", "woman"),
        "Baby cry, infant cry": ("baby", "baby"), "Chainsaw": ("chainsaw", "saw"),
        "Lawn mower": ("lawn mower", "mower"),
        "Ambulance (siren)": ("ambulance", "emergency-car"), "Frying (food)": ("frying pan", "frying-food"),
        "Zither": ("zither", "guzheng"), "Bark": ("dog", "dog"), "Wind": (None, None), "Silence": (None, None),
        "Speech": ("person", None), "Rock music": (None, None), "Frog": ("frog", None),
    }  # fmt: skip
    for label, (noun, avss_class) in expected.items():
        entry = vocabulary[label]
        assert (entry.noun, entry.avss_class) == (noun, avss_class), label
        assert entry.class_index == (AVSS_CLASS_NAMES.index(avss_class) + 1 if avss_class else 0)
    assert vocabulary["Wind"].reason.startswith("no visible source")


def _table(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([list(VOCABULARY_COLUMNS), *rows])
    return out.getvalue()


def test_a_bad_table_is_refused_naming_the_row():
    _, *rows = shipped_rows()
    cases = [
        (rows[:-1], "1 AudioSet labels are missing"),
        ([*rows, rows[3]], "line 529: 'Child speech, kid speaking' appears twice"),
        ([["Not a label", "x", "", "ambiguous: x", ""], *rows], "line 2: 'Not a label' is not an AudioSet label"),
        ([["Dog", "dog", "wolfhound", "", ""], *rows[1:]], "avss_class 'wolfhound' is not one of the 70"),
        ([["Speech", "person", "", "", ""], *rows[1:]], "line 2: no class for 'Speech'"),
        ([["Speech", "person", "man", "ambiguous: x", ""], *rows[1:]], "needs a noun and no reason"),
        ([["Speech", "person"], *rows[1:]], "line 2: expected 5 columns"),
    ]
    for table, message in cases:
        with pytest.raises(ValueError, match=message):
            read_vocabulary(_table(table), "table.csv")
    with pytest.raises(ValueError, match="table.csv: expected the header"):
        read_vocabulary("label,noun\n", "table.csv")


# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------


def test_class_prompts_fill_the_template():
    prompts = class_prompts()
    assert prompts[0] == "a photo of an accordion." and prompts[21] == "a photo of an emergency vehicle."
    assert class_prompts("{}")[69] == "a woman"
    with pytest.raises(ValueError, match="template"):
        class_prompts("no slot")


def test_prompts_for_tags_raw_and_vocabulary():
    tags = ["Dog", "Bark", "Speech", "Silence", "Male speech, man speaking", "Howl"]
    raw = prompts_for_tags(tags, "raw")
    assert raw.prompts == tags and raw.class_indices == [17, 17, 0, 0, 41, 0]
    nouns = prompts_for_tags(tags, "vocabulary")
    assert nouns.prompts == ["dog", "person", "man"] and nouns.class_indices == [17, 0, 41]
    # the first tag with a class gives the shared prompt's class
    assert prompts_for_tags(["Howl", "Bark"], "vocabulary") == (["dog"], [17])
    with pytest.raises(ValueError, match="mode"):
        prompts_for_tags(tags, "nouns")
    with pytest.raises(ValueError, match="'Doggo' is not an AudioSet label"):
        prompts_for_tags(["Doggo"], "raw")


# --------------------------------------------------------------------------------------------
# The class decision, against brute force
# --------------------------------------------------------------------------------------------


def _dot(u: list[float], w: list[float]) -> float:
    return sum(x * y for x, y in zip(u, w))


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


@settings(max_examples=80, deadline=None)
@given(
    st.integers(0, 5), st.integers(1, 6), st.integers(1, 4), st.floats(0, 1), st.floats(0.2, 5), st.floats(0.2, 5),
    st.integers(0, 2**31 - 1),
)
def test_label_masks_equal_brute_force(masks, classes, dim, threshold, vision_scale, audio_scale, seed):
    g = torch.Generator().manual_seed(seed)
    visual, audio = torch.randn(masks, dim, generator=g), torch.randn(dim, generator=g)
    text = TextEmbeddings(torch.randn(classes, dim, generator=g), torch.randn(classes, dim, generator=g),
                          vision_scale=2.0, vision_bias=-1.0, audio_scale=0.5, audio_bias=3.0)  # fmt: skip
    out = label_masks(visual, audio, text, threshold=threshold, vision_scale=vision_scale, audio_scale=audio_scale)
    assert out.classes.shape == out.scores.shape == (masks,) and out.probabilities.shape == (masks, classes)
    a = audio.double().tolist()
    p_audio = _softmax([audio_scale * (0.5 * _dot(a, row) + 3.0) for row in text.audio.double().tolist()])
    for k in range(masks):
        v = visual[k].double().tolist()
        p_vision = _softmax([vision_scale * (2.0 * _dot(v, row) - 1.0) for row in text.vision.double().tolist()])
        product = [pv * pa for pv, pa in zip(p_vision, p_audio)]
        assert out.probabilities[k].tolist() == pytest.approx(product, abs=1e-5)
        best = max(range(classes), key=lambda c: (float(out.probabilities[k, c]), -c))
        assert float(out.scores[k]) == pytest.approx(product[best], abs=1e-5)
        assert int(out.classes[k]) == (best + 1 if float(out.scores[k]) >= threshold else 0)


@settings(max_examples=120, deadline=None)
@given(st.integers(0, 6), st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_class_map_equals_a_pixel_by_pixel_reference(count, height, width, seed):
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(count, height, width, generator=g) < 0.5
    classes = torch.randint(0, 4, (count,), generator=g)
    scores = torch.randint(0, 3, (count,), generator=g).float() / 2  # ties are common
    got = class_map(masks, classes, scores)
    assert got.dtype == torch.int64 and got.shape == (height, width)
    for y in range(height):
        for x in range(width):
            covering = [k for k in range(count) if bool(masks[k, y, x]) and int(classes[k]) > 0]
            winner = max(covering, key=lambda k: (float(scores[k]), -k)) if covering else None
            assert int(got[y, x]) == (int(classes[winner]) if winner is not None else 0)


def test_bad_inputs_are_refused():
    text = TextEmbeddings(torch.randn(3, 4), torch.randn(3, 4))
    with pytest.raises(ValueError, match="visual, audio"):
        label_masks(torch.randn(2, 5), torch.randn(4), text)
    with pytest.raises(ValueError, match="threshold"):
        label_masks(torch.randn(2, 4), torch.randn(4), text, threshold=1.5)
    with pytest.raises(ValueError, match="audio_scale"):
        label_masks(torch.randn(2, 4), torch.randn(4), text, audio_scale=0)
    masks = torch.ones(2, 3, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="scores: expected finite"):
        class_map(masks, torch.tensor([1, 2]), torch.tensor([0.5, float("nan")]))
    with pytest.raises(ValueError, match="classes, scores"):
        class_map(masks, torch.tensor([1]), torch.tensor([0.5, 0.2]))
    with pytest.raises(ValueError, match="masks: expected"):
        class_map(masks.float(), torch.tensor([1, 2]), torch.tensor([0.5, 0.2]))


def test_labels_from_the_tiny_imagebind_binder():
    binder = binder_of(load_models("tiny", device="cpu"))
    text = binder.embed_text(class_prompts())
    g = torch.Generator().manual_seed(0)
    crops = [torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8, generator=g) for _ in range(3)]
    visual = binder.embed_vision(crops)
    audio = binder.embed_audio([0.1 * torch.randn(16000, generator=g)], 16000)[0]
    out = label_masks(visual, audio, text)
    assert out.probabilities.shape == (3, 70) and bool((out.classes >= 1).all())  # threshold 0: never background
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[0, :4], masks[1, 2:6], masks[2, 6:] = True, True, True
    assert set(class_map(masks, out.classes, out.scores).unique().tolist()) <= {0, *out.classes.tolist()}
