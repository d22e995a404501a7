"""Reading suites: both item forms, answers by index or text, images beside the suite, and named bad lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from lingudistill.data.records import DataError
from lingudistill.evaluation import load_suite
from lingudistill.evaluation.suites import item_keys
from lingudistill.spec import EvalSuite


def test_items_of_both_forms(write_suite, tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    path = write_suite(
        "mc",
        [
            {"question": "q1", "choices": ["a", "b", "c"], "answer": 2, "image": "images/x.png"},
            {"question": "q2", "choices": ["a", "b"], "answer": "b"},
            {"question": "q3", "choices": ["a", "b"], "answer": 0},
        ],
    )
    items = load_suite(EvalSuite(name="mc", uri=str(path), max_items=2))
    assert [item.answer for item in items] == [2, 1]
    assert items[0].image is not None and items[0].image.value == str(tmp_path / "images" / "x.png")
    assert items[0].format == "multiple_choice" and items[1].image is None
    short = load_suite(EvalSuite(name="sa", uri=str(write_suite("sa", [{"question": "q", "answer": "red"}]))))
    assert short[0].format == "short_answer" and short[0].answer == "red"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"question": "q", "choices": ["a", "b"], "answer": 5}', "out of range"),
        ('{"question": "q", "choices": ["a", "b"], "answer": "c"}', "not one of the choices"),
        ('{"question": "q", "choices": ["a", "b"], "answer": true}', "boolean"),
        ('{"question": "q", "choices": ["a"], "answer": 0}', "at least two"),
        ('{"question": "", "answer": "x"}', "'question'"),
        ('{"question": "q"}', "'answer' is missing"),
        ('{"question": "q", "answer": "x", "label": 1}', "unknown field"),
        ('{"question": "q", "answer": "x", "image": "../outside.png"}', "leaves the dataset folder"),
        ('{"question": "q", "answer": ', "not valid JSON"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_a_bad_line_is_named_by_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "suite.jsonl"
    path.write_text('{"question": "fine", "answer": "x"}\n\n' + line + "\n")
    with pytest.raises(DataError, match=message) as caught:
        load_suite(EvalSuite(name="bad", uri=str(path)))
    assert f"{path}:3" in str(caught.value) and str(caught.value).startswith("bad ")


def test_a_suite_mixing_forms_is_refused(write_suite) -> None:
    path = write_suite(
        "mixed", [{"question": "q", "choices": ["a", "b"], "answer": 0}, {"question": "q", "answer": "a"}]
    )
    with pytest.raises(DataError, match=r"all multiple choice or all short answer") as caught:
        load_suite(EvalSuite(name="mixed", uri=str(path)))
    assert f"{path}:2" in str(caught.value)


def test_a_missing_suite_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_suite(EvalSuite(name="gone", uri=str(tmp_path / "gone.jsonl")))


def test_items_are_keyed_by_their_id_else_by_their_index(write_suite) -> None:
    path = write_suite(
        "keys",
        [
            {"question": "q", "answer": "a", "id": "arc-17"},
            {"question": "q", "answer": "b"},
            {"id": 9, "question": "q", "answer": "c"},
        ],
    )
    assert item_keys(load_suite(EvalSuite(name="keys", uri=str(path)))) == ["arc-17", "1", "9"]


def test_a_key_used_twice_is_refused(write_suite) -> None:
    path = write_suite("twice", [{"question": "q", "answer": "a", "id": "1"}, {"question": "q", "answer": "b"}])
    with pytest.raises(DataError, match=r"item key '1' is used twice") as caught:
        load_suite(EvalSuite(name="twice", uri=str(path)))
    assert f"{path}:2" in str(caught.value)
