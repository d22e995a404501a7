"""Evaluation suites: JSONL files of items, read and checked before any model runs.

Two item forms, one per line:

    {"question": "...", "choices": ["...", ...], "answer": 2 | "choice text", "image": LOCATOR?}   multiple choice
    {"question": "...", "answer": "...", "image": LOCATOR?}                                        short answer

`answer` of a multiple-choice item is the index of the right choice or its exact text. A suite holds one form
only, so that it has one primary metric. `id` (optional, a string or an integer) names the item in the per-item
scores (eval_items.json) that the lift over a control arm pairs by; without it an item is named by its index in
the suite. Keys must be unique within a suite. `image` is a path relative to the suite file's folder (which it must
not leave), an s3:// URI or a base64 data URI, exactly as in training records. A bad line raises DataError
naming file:line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Literal

from lingudistill import uris
from lingudistill.data.records import DataError, ImageRef, image_ref
from lingudistill.spec import EvalSuite

ItemFormat = Literal["multiple_choice", "short_answer"]
_ALLOWED_KEYS = {"question", "choices", "answer", "image", "id"}


@dataclass(frozen=True)
class EvalItem:
    question: str
    answer: int | str  # the index of the right choice (multiple choice) or the reference text (short answer)
    choices: tuple[str, ...] | None
    image: ImageRef | None
    origin: str  # "path/to/suite.jsonl:17"
    id: str | None = None  # the item's own name, when the file gives one

    @property
    def format(self) -> ItemFormat:
        return "multiple_choice" if self.choices is not None else "short_answer"


def load_suite(suite: EvalSuite) -> list[EvalItem]:
    """The suite's items in file order, at most `max_items`. Raises DataError at the first bad line."""
    try:
        path = uris.fetch(suite.uri)
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(str(exc), source=suite.name) from None
    if path.is_dir():
        raise DataError(f"{path} is a folder; an evaluation suite is one JSONL file", source=suite.name)
    items = list(islice(_read_items(path, suite.name), suite.max_items))
    formats = {item.format for item in items}
    if len(formats) > 1:
        first_short = next(item for item in items if item.format == "short_answer")
        raise DataError(
            "a suite must be all multiple choice or all short answer; this line has no 'choices' but others do",
            source=suite.name,
            origin=first_short.origin,
        )
    _check_unique_keys(items, suite.name)
    return items


def item_keys(items: list[EvalItem]) -> list[str]:
    """The stable name of each item for per-item scores: its `id`, else its index in the suite."""
    return [item.id if item.id is not None else str(index) for index, item in enumerate(items)]


def _check_unique_keys(items: list[EvalItem], name: str) -> None:
    seen: set[str] = set()
    for key, item in zip(item_keys(items), items, strict=True):
        if key in seen:
            raise DataError(
                f"item key {key!r} is used twice; 'id' must be unique in a suite", source=name, origin=item.origin
            )
        seen.add(key)


def suite_format(items: list[EvalItem]) -> ItemFormat | None:
    return items[0].format if items else None


def _read_items(path: Path, name: str):  # type: ignore[no-untyped-def]
    try:
        yield from _read_lines(path, name)
    except UnicodeDecodeError as exc:  # an upload of binary data (found by Schemathesis, issue 9)
        raise DataError(f"not UTF-8 text: {exc.reason} at byte {exc.start}", source=name, origin=str(path)) from None


def _read_lines(path: Path, name: str):  # type: ignore[no-untyped-def]
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            origin = f"{path}:{number}"
            try:
                yield parse_item(json.loads(line), origin=origin, base_dir=path.parent)
            except json.JSONDecodeError as exc:
                raise DataError(f"not valid JSON: {exc.msg} (column {exc.colno})", source=name, origin=origin) from None
            except DataError as exc:
                raise DataError(exc.reason, source=name, origin=origin) from None


def parse_item(obj: object, *, origin: str, base_dir: Path | None) -> EvalItem:
    if not isinstance(obj, dict):
        raise DataError(f"an item must be a JSON object, not {type(obj).__name__}")
    unknown = sorted(set(obj) - _ALLOWED_KEYS)
    if unknown:
        raise DataError(f"unknown field(s) {', '.join(unknown)}; allowed: question, choices, answer, image, id")
    question = obj.get("question")
    if not isinstance(question, str) or not question.strip():
        raise DataError("'question' must be a non-empty string")
    image = image_ref(obj["image"], base_dir) if obj.get("image") is not None else None
    item_id = _item_id(obj.get("id"))
    if "answer" not in obj:
        raise DataError("'answer' is missing")
    if obj.get("choices") is None:
        answer = obj["answer"]
        if not isinstance(answer, str) or not answer.strip():
            raise DataError("a short-answer item needs 'answer' as a non-empty string (or give 'choices')")
        return EvalItem(question, answer, None, image, origin, item_id)
    choices = _choices(obj["choices"])
    return EvalItem(question, _answer_index(obj["answer"], choices), choices, image, origin, item_id)


def _item_id(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int) or (isinstance(value, str) and not value.strip()):
        raise DataError("'id' must be a non-empty string or an integer")
    return str(value)


def _choices(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) < 2:
        raise DataError("'choices' must be a list of at least two strings")
    if not all(isinstance(choice, str) and choice.strip() for choice in value):
        raise DataError("every choice must be a non-empty string")
    return tuple(value)


def _answer_index(answer: object, choices: tuple[str, ...]) -> int:
    if isinstance(answer, bool):  # bool is an int in Python; true/false is never an index
        raise DataError("'answer' must be a choice index or the text of a choice, not a boolean")
    if isinstance(answer, int):
        if not 0 <= answer < len(choices):
            raise DataError(f"'answer' index {answer} is out of range for {len(choices)} choices")
        return answer
    if isinstance(answer, str):
        if answer not in choices:
            raise DataError(f"'answer' {answer[:80]!r} is not one of the choices")
        return choices.index(answer)
    raise DataError("'answer' must be a choice index or the text of a choice")
