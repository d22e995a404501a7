"""Real vocabulary relations (METHOD.md, "Vocabularies"): the student's tokenizer extends the teacher's.

The tiny "*-vocab" families of identity.FAMILIES have the relations of SmolVLM over SmolLM2, LLaVA-1.5 over
Vicuna, PaliGemma over Gemma and Qwen2-VL over Qwen2; their identities are checked in test_identities.py. Here:
what compat accepts and refuses, CE-only targets, and the limits named at validation.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lingudistill.data.records import DataError, parse_record
from lingudistill.models.compat import (
    IncompatibleModels,
    InexactHandOver,
    check_compatibility,
    shared_vocab_size,
)
from lingudistill.models.encoding import Encoder, collate
from lingudistill.objective import DistillationObjective
from lingudistill.spec import MethodSpec
from lingudistill.tiny.paligemma import build_paligemma
from lingudistill.tiny.tokenizer import DEFAULT_WORDS, build_tokenizer
from tests.engine.identity import kd_of, load_pair, sample_records

VOCAB_FAMILIES = ["smolvlm-vocab", "llava-1.5-vocab", "paligemma-vocab", "qwen2_vl-vocab"]


@pytest.fixture(params=VOCAB_FAMILIES)
def tiny(request, tiny_families):
    return tiny_families(request.param)


def test_an_extended_tokenizer_is_accepted(tiny):
    student, teacher, _ = tiny.pair
    student_tokens = len(student.processor.tokenizer)
    assert student_tokens > shared_vocab_size(teacher) == len(teacher.tokenizer)
    check_compatibility(student, teacher)


def test_qwen2_vl_like_heads_have_equal_rows_past_both_tokenizers(tiny_families):
    student, teacher, _ = tiny_families("qwen2_vl-vocab").pair
    rows = student.adapter.lm_head(student.model).weight.shape[0]
    assert rows == teacher.model.lm_head.weight.shape[0] > len(student.processor.tokenizer) > len(teacher.tokenizer)


def test_a_qwen2_vl_checkpoints_legacy_mrope_type_is_no_mismatch(tiny_families, monkeypatch):
    """Real Qwen2-VL configs say rope_scaling {"type": "mrope", "mrope_section": ...}: the same rope as Qwen2's."""
    student, teacher, _ = tiny_families("qwen2_vl-vocab").pair
    text = student.adapter.text_config(student.model)
    monkeypatch.setattr(text, "rope_parameters", {**text.rope_parameters, "type": "mrope"})
    check_compatibility(student, teacher)


def test_a_differing_token_is_named_with_both_strings(tiny_families):
    student, teacher, _ = tiny_families("llava-1.5-vocab").pair
    words = list(DEFAULT_WORDS)
    words[3], words[4] = words[4], words[3]
    other = build_tokenizer(words, image_placeholder="")
    index = other.convert_tokens_to_ids(words[3])
    named = f"token id {index} is '{words[4]}' in the student's tokenizer and '{words[3]}' in the teacher's"
    with pytest.raises(IncompatibleModels, match=named):
        check_compatibility(student, dataclasses.replace(teacher, tokenizer=other))


def test_a_student_tokenizer_shorter_than_the_teachers_is_refused(tiny_families):
    student, teacher, _ = tiny_families("llava-1.5-vocab").pair
    shorter = build_tokenizer(DEFAULT_WORDS[:-5], image_placeholder="")
    with pytest.raises(IncompatibleModels, match=r"student's tokenizer \(56 tokens\) must extend the teacher's \(61"):
        check_compatibility(dataclasses.replace(student, processor=shorter), teacher)


@pytest.mark.parametrize(
    "key,value,named",
    [
        ("rope_theta", 123.0, "rope: student"),
        ("sliding_window", 4, "sliding window: student None, teacher 4"),
        ("attn_logit_softcapping", 50.0, "attention logit softcapping: student None, teacher 50.0"),
    ],
)
def test_attention_settings_must_match(tiny_families, monkeypatch, key, value, named):
    student, teacher, _ = tiny_families("llava-1.5-vocab").pair
    config = teacher.model.config
    if key == "rope_theta":
        monkeypatch.setattr(config, "rope_parameters", {**config.rope_parameters, key: value})
    else:
        monkeypatch.setattr(config, key, value, raising=False)
    with pytest.raises(IncompatibleModels, match=named):
        check_compatibility(student, teacher)
    if key == "rope_theta":
        with pytest.warns(InexactHandOver, match="rope: student"):
            check_compatibility(student, teacher, MethodSpec(allow_rope_mismatch=True))
    else:
        with pytest.raises(IncompatibleModels, match=named):
            check_compatibility(student, teacher, MethodSpec(allow_rope_mismatch=True))


def test_targets_outside_the_teachers_vocabulary_get_ce_but_no_kd(tiny_families, tmp_path):
    """A response holding a student-only token (a row/column marker): CE trains it, KD skips it and the next token
    (which the teacher would predict from its pad embedding), and identity 1 holds on the rest."""
    tiny = tiny_families("smolvlm-vocab")
    student, teacher, _ = tiny.pair
    record = parse_record(
        {"prompt": "what is there ?", "response": "the square <row_1_col_1> is red"},
        source="mix",
        origin="inline:1",
        base_dir=tmp_path,
    )
    encoder = Encoder(student.adapter, student.processor, max_seq_len=512)
    batch = collate([encoder.encode(record, distill=True)], student.adapter, pad_token_id=0)
    shared = shared_vocab_size(teacher)
    method = MethodSpec()
    objective = DistillationObjective(student.model, teacher.model, student.adapter, method, shared)
    with torch.no_grad():
        loss = objective(batch, ce_normalizer=1.0, kd_normalizer=1.0)
    outside = loss.rows.target >= shared
    after = torch.roll(outside, 1)
    assert int(outside.sum()) == 1
    assert not bool(loss.rows.distill[outside | after].any()) and bool(loss.rows.distill[~(outside | after)].all())
    assert float(loss.parts.per_token_ce[outside]) > 0
    assert float(loss.parts.kd_sum) <= 1e-6
    assert objective.distilled_tokens(batch) == len(loss.rows.target) - 2  # what the kd_normalizer should count


@pytest.fixture(scope="module")
def narrow_window_paligemma2(tmp_path_factory):
    """PaliGemma2 whose sliding window (8) is shorter than the sample prompts (about 23 tokens)."""
    folder = tmp_path_factory.mktemp("paligemma2-window")
    student, teacher = load_pair(*build_paligemma(folder, decoder="gemma2", text_overrides={"sliding_window": 8}))
    return student, teacher, sample_records(folder)


def test_paligemma2_prefixes_longer_than_the_window_are_inexact(narrow_window_paligemma2, monkeypatch):
    """Why the limit exists: with equal decoders, KD is far from 0 once the prefix outgrows the window."""
    monkeypatch.setattr(narrow_window_paligemma2[0].adapter, "distilled_prompt_limit", lambda: None)
    kd, _, batch = kd_of(*narrow_window_paligemma2)
    assert batch["prompt_length"] > 8
    assert kd > 1e-2


def test_paligemma2_prefixes_longer_than_the_window_are_refused_when_distilled(narrow_window_paligemma2):
    student, _, records = narrow_window_paligemma2
    encoder = Encoder(student.adapter, student.processor, max_seq_len=512)
    with pytest.raises(DataError, match=r"mix inline:1: the prompt is \d+ tokens .* sliding window of 8 tokens"):
        encoder.encode(records[0], distill=True)
    encoder.encode(records[0], distill=False)  # never seen by the teacher: no limit


@pytest.mark.parametrize("mode", ["prompt", "visual", "off"])
def test_a_pad_id_the_teacher_lacks_is_never_embedded(tiny_families, monkeypatch, mode):
    """LLaVA-1.5's <pad> (32001) lies past Vicuna's 32000 tokens: batches padded with it give the teacher its own
    safe id, and the same KD as batches padded with an id both know."""
    student, teacher, records = tiny_families("llava-1.5-vocab").pair
    shared = shared_vocab_size(teacher)
    pad = shared + 1  # past <image> (= shared): a row of the student's padded head, no token the teacher knows
    monkeypatch.setattr(student.adapter.text_config(student.model), "pad_token_id", pad)
    encoder = Encoder(student.adapter, student.processor, max_seq_len=512)
    batch = collate([encoder.encode(r, distill=True) for r in records], student.adapter, pad_token_id=pad)
    assert bool((batch["input_ids"] == pad).any()) and not bool(batch["attention_mask"].all())
    method = MethodSpec(kv_sharing=mode)
    objective = DistillationObjective(student.model, teacher.model, student.adapter, method, shared)
    with torch.no_grad():
        kd = float(objective(batch, ce_normalizer=1.0, kd_normalizer=1.0).parts.kd_sum)
    reference, _, _ = kd_of(student, teacher, records, mode)  # padded with id 0
    assert kd == pytest.approx(reference, abs=1e-4)
