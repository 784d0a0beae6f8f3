"""The family table (cmsf.models.families): every entry names classes transformers has, builds
its random configs as the classes it names expect, and the components read their families from it."""

from __future__ import annotations

import pytest
import transformers

from cmsf.models.families import (
    BERT_PHRASE_TOKENS,
    FAMILY_TABLE,
    accepted_names,
    default_family,
    families_of,
    family_named,
    family_of,
)
from cmsf.models.loading import FAMILIES, load_models
from cmsf.models.random_configs import tiny_bert_tokenizer, tiny_bert_vocab
from cmsf.stages.binding import DEFAULT_BIND_MODES, check_bind_mode

HF_FAMILIES = [family for family in FAMILY_TABLE if family.model_class is not None]


@pytest.mark.parametrize("family", HF_FAMILIES, ids=lambda f: f"{f.component}:{f.name}")
def test_every_family_names_transformers_classes_and_loads_its_own_model_type_first(family):
    assert family.model_types[0] == family.name
    model_class = getattr(transformers, family.model_class)
    assert model_class.config_class.model_type == family.name
    assert isinstance(getattr(transformers, family.processor), type)
    assert all(isinstance(getattr(transformers, part), type) for _, part in family.processor_parts)


@pytest.mark.parametrize("family", [f for f in HF_FAMILIES if f.random is not None], ids=lambda f: f.name)
def test_every_random_config_is_the_config_its_model_class_takes(family):
    config_class = getattr(transformers, family.model_class).config_class
    for size in ("tiny", "full"):
        assert type(family.random.config(size)) is config_class


def test_a_model_type_loads_as_one_family_of_a_component():
    components = {family.component for family in FAMILY_TABLE}
    for component in components:
        types = [t for family in families_of(component) for t in family.model_types]
        assert len(types) == len(set(types)), component
        assert FAMILIES[component] == tuple(types)
        for model_type in types:
            assert model_type in family_of(component, model_type).model_types


def test_the_hubs_video_checkpoints_load_into_the_image_families_and_the_tracker_takes_them_whole():
    assert family_of("sam", "sam2_video").name == "sam2" and family_of("sam", "edgetam_video").name == "edgetam"
    assert family_of("sam3", "sam3_video").name == "sam3"
    assert family_of("tracker", "sam2_video").model_class == "Sam2VideoModel"
    assert family_of("sam", "owlv2") is None


def test_defaults_are_the_paper_families_and_unknown_names_are_errors_naming_the_accepted_ones():
    assert [default_family(c).name for c in ("ast", "grounding_dino", "sam", "owlv2", "sam3", "binder")] == [
        "audio-spectrogram-transformer", "grounding-dino", "sam", "owlv2", "sam3", "pe_audio_video",
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"family: sam has no family 'owlv2'.*'sam_hq'"):
        family_named("sam", "owlv2")
    assert accepted_names("binder") == ["pe_audio_video", "imagebind"]


def test_the_tiny_bert_vocabulary_puts_the_phrase_tokens_where_grounding_dino_reads_them():
    vocab, tokens = tiny_bert_vocab(), BERT_PHRASE_TOKENS
    assert (vocab["[CLS]"], vocab["[SEP]"], vocab["[PAD]"]) == (tokens.cls, tokens.sep, tokens.pad)
    assert (vocab["."], vocab["?"]) == BERT_PHRASE_TOKENS.delimiters
    ids = tiny_bert_tokenizer()("dog. cat?")["input_ids"]
    assert ids[0] == BERT_PHRASE_TOKENS.cls and ids[-1] == BERT_PHRASE_TOKENS.sep
    assert set(BERT_PHRASE_TOKENS.delimiters) <= set(ids)
    assert transformers.models.grounding_dino.modeling_grounding_dino.SPECIAL_TOKENS == [
        BERT_PHRASE_TOKENS.cls, BERT_PHRASE_TOKENS.sep, *BERT_PHRASE_TOKENS.delimiters
    ]


def test_bind_modes_come_from_the_binder_families():
    assert DEFAULT_BIND_MODES == {"pe_audio_video": "calibrated", "imagebind": "softmax"}
    models = load_models("tiny", device="cpu")
    assert models.binder_kind == "imagebind" and check_bind_mode(models, None) == "softmax"
    assert models.source("binder") == "ImageBind (the imagebind component)" and models.loaded == ()
