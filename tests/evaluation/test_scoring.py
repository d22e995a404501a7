"""The scorers against hand-computed log-likelihoods, the tie rule, exact match, and a real tiny VLM."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from lingudistill.evaluation import Scorer, SuiteScore, evaluate_suites, exact_match, normalize_answer, pick_choice
from lingudistill.evaluation.scoring import _record
from lingudistill.evaluation.suites import load_suite
from lingudistill.models.loading import load_student, load_teacher
from lingudistill.spec import EvalSuite
from lingudistill.tiny.llava import build_llava
from tests.evaluation.stub import TableLM, stub_tokenizer


@pytest.fixture
def tokenizer():  # type: ignore[no-untyped-def]
    return stub_tokenizer()


def ids(tokenizer, *tokens: str) -> list[int]:  # type: ignore[no-untyped-def]
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def suite(write_suite, name: str, items: list[dict]) -> EvalSuite:  # type: ignore[no-untyped-def]
    return EvalSuite(name=name, uri=str(write_suite(name, items)))


def test_loglikelihood_is_the_sum_over_the_answer_tokens(tokenizer, write_suite) -> None:
    vocab = len(tokenizer)
    assistant, three = ids(tokenizer, "assistant", "three")
    table = torch.zeros(vocab, vocab)
    table[assistant, three] = 3.0
    scorer = Scorer(TableLM(table), None, tokenizer, batch_size=2)
    items = load_suite(
        suite(write_suite, "s", [{"question": "what is one plus two ?", "choices": ["one", "three"], "answer": 1}])
    )
    logliks = scorer.loglikelihoods([_record(items[0], "one"), _record(items[0], "three")])

    # by hand: the answer's first token follows "assistant", then <|im_end|> follows the answer word (uniform row)
    log_v = math.log(vocab)
    partition = math.log(math.exp(3.0) + vocab - 1)
    assert logliks[0] == pytest.approx((0.0 - partition) - log_v, abs=1e-6)
    assert logliks[1] == pytest.approx((3.0 - partition) - log_v, abs=1e-6)
    assert scorer.score_multiple_choice(items) == {"acc": 1.0, "acc_norm": 1.0}


def test_acc_norm_divides_by_the_characters_of_the_choice(tokenizer, write_suite) -> None:
    """Uniform logits: every token costs log V, so the longer choice loses on the sum and wins per character."""
    scorer = Scorer(TableLM(torch.zeros(len(tokenizer), len(tokenizer))), None, tokenizer)
    items = load_suite(
        suite(write_suite, "s", [{"question": "what is ?", "choices": ["one", "three plus two"], "answer": 1}])
    )
    # "one" + end: -2 log V over 3 characters; "three plus two" + end: -4 log V over 14 characters
    assert scorer.score_multiple_choice(items) == {"acc": 0.0, "acc_norm": 1.0}


def test_a_suite_keeps_the_score_of_every_item_by_its_key(tokenizer, write_suite) -> None:
    """Uniform logits: per character, the longer choice always wins (see above), so each item is right exactly
    when its answer is the longer choice; acc (on sums) picks the shorter."""
    scorer = Scorer(TableLM(torch.zeros(len(tokenizer), len(tokenizer))), None, tokenizer)
    items = [
        {"question": "what is ?", "choices": ["one", "three plus two"], "answer": 1, "id": "long"},
        {"question": "what is ?", "choices": ["one", "three plus two"], "answer": 0, "id": "short"},
        {"question": "what is ?", "choices": ["three plus two", "two"], "answer": 0},
    ]
    score = scorer.score_suite(suite(write_suite, "keys", items), "language")
    assert score.items == {"long": 1.0, "short": 0.0, "2": 1.0}
    assert score.score == pytest.approx(2 / 3) and score.metrics["acc"] == pytest.approx(1 / 3)
    assert SuiteScore.from_dict(json.loads(json.dumps(score.to_dict()))) == score
    assert "items" not in score.to_dict(with_items=False)


@pytest.mark.parametrize(("answer", "expected"), [(0, 1.0), (1, 0.0)])
def test_a_tie_goes_to_the_lowest_index(tokenizer, write_suite, answer: int, expected: float) -> None:
    scorer = Scorer(TableLM(torch.zeros(len(tokenizer), len(tokenizer))), None, tokenizer)
    items = load_suite(
        suite(write_suite, "s", [{"question": "what is ?", "choices": ["one", "two"], "answer": answer}])
    )
    assert scorer.score_multiple_choice(items) == {"acc": expected, "acc_norm": expected}
    assert pick_choice([-1.0, -0.5, -0.5]) == 1
    assert pick_choice([2.0, 2.0]) == 0


def test_short_answers_use_normalised_exact_match_and_stop_at_end_of_turn(tokenizer, write_suite) -> None:
    canned = ids(tokenizer, "the", "square", "is", "red", ".", "<|im_end|>", "two")
    model = TableLM(torch.zeros(len(tokenizer), len(tokenizer)), canned)
    items = [{"question": "what is ?", "answer": "Square is RED!"}, {"question": "what is ?", "answer": "red"}]
    scores = evaluate_suites([suite(write_suite, "sa", items)], "language", model, None, tokenizer, batch_size=4)
    per_item = {"0": 1.0, "1": 0.0}  # the canned answer is "the square is red.", right for the first item only
    assert scores["sa"] == SuiteScore("sa", "language", "exact_match", 0.5, {"exact_match": 0.5}, 2, per_item)


@pytest.mark.parametrize(
    ("prediction", "reference", "equal"),
    [
        ("The square is red.", "square is red", True),
        ("  an   Apple ", "apple", True),
        ("red, green", "red green", True),
        ("the red", "green", False),
        ("theatre", "atre", False),  # articles are whole words only
    ],
)
def test_normalised_exact_match(prediction: str, reference: str, equal: bool) -> None:
    assert exact_match(prediction, reference) is equal
    assert normalize_answer("A  Dog's  life!") == "dogs life"


# --- a real tiny VLM ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("tiny")
    student_dir, teacher_dir = build_llava(folder)
    Image.new("RGB", (32, 32), "red").save(folder / "red.png")
    Image.new("RGB", (20, 40), "blue").save(folder / "blue.png")
    return folder, load_student(str(student_dir)), load_teacher(str(teacher_dir))


def test_batched_label_logprobs_match_the_full_forward(tiny) -> None:
    folder, student, _ = tiny
    items = [
        {
            "question": "what colour is the square ?",
            "choices": ["red", "the square is blue ."],
            "answer": 0,
            "image": "red.png",
        },
        {"question": "what is two plus two ?", "choices": ["four", "five"], "answer": 0},
        {"question": "is it blue ?", "choices": ["yes it is blue", "no"], "answer": 0, "image": "blue.png"},
    ]
    path = folder / "mixed.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    loaded = load_suite(EvalSuite(name="m", uri=str(path)))
    records = [_record(item, choice) for item in loaded for choice in item.choices or ()]
    one_by_one = Scorer(student.model, student.adapter, student.processor, batch_size=1).loglikelihoods(records)
    batched = Scorer(student.model, student.adapter, student.processor, batch_size=4).loglikelihoods(records)
    assert batched == pytest.approx(one_by_one, abs=1e-4)

    # the naive way: the full logits of one unpadded sequence
    scorer = Scorer(student.model, student.adapter, student.processor)
    example = scorer.encoder.encode(records[0])
    with torch.no_grad():
        logits = (
            student.model(input_ids=example.input_ids[None], pixel_values=example.images["pixel_values"])
            .logits[0, :-1]
            .log_softmax(-1)
        )
    targets = example.labels[1:]
    keep = targets != -100
    naive = logits[keep].gather(-1, targets[keep, None]).sum()
    assert one_by_one[0] == pytest.approx(float(naive), abs=1e-4)


def test_evaluate_suites_on_student_and_teacher(tiny, write_suite, tmp_path: Path) -> None:
    _, student, teacher = tiny
    Image.new("RGB", (32, 32), "red").save(tmp_path / "red.png")  # relative to the suite file
    vision = suite(
        write_suite,
        "vision",
        [
            {
                "question": "what colour is the square ?",
                "choices": ["red", "blue", "green"],
                "answer": "red",
                "image": "red.png",
            }
        ],
    )
    language = suite(
        write_suite, "language", [{"question": "what is two plus two ?", "choices": ["four", "five"], "answer": 0}]
    )
    short = suite(write_suite, "short", [{"question": "what is two plus two ?", "answer": "four"}])
    student.model.train()
    scores = evaluate_suites([vision], "vision", student.model, student.adapter, student.processor, batch_size=2)
    assert student.model.training, "the caller's train mode comes back"
    assert set(scores) == {"vision"} and scores["vision"].metric == "acc_norm" and scores["vision"].n_items == 1
    text = evaluate_suites([language, short], "language", teacher.model, None, teacher.tokenizer, batch_size=2)
    assert {s.metric for s in text.values()} == {"acc_norm", "exact_match"}
    for score in [*scores.values(), *text.values()]:
        assert SuiteScore.from_dict(json.loads(json.dumps(score.to_dict()))) == score
        assert 0.0 <= score.score <= 1.0


def test_an_empty_suite_scores_none(tiny, tmp_path: Path) -> None:
    _, _, teacher = tiny
    (tmp_path / "empty.jsonl").write_text("\n")
    scores = evaluate_suites(
        [EvalSuite(name="empty", uri=str(tmp_path / "empty.jsonl"))],
        "language",
        teacher.model,
        None,
        teacher.tokenizer,
        batch_size=2,
    )
    assert scores["empty"].score is None and scores["empty"].n_items == 0
