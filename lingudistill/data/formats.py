"""The layouts VLM instruction data usually comes in, turned into the chat form that `records` validates.

- LLaVA and ShareGPT: {"conversations": [{"from": "human", "value": "<image>\\nWhat is shown?"},
  {"from": "gpt", "value": "A cat."}], "image": "coco/1.jpg"}. `from` is human/user, gpt/assistant (and the
  other assistant names ShareGPT dumps use) or system. Each `<image>` placeholder takes the next image of `image`
  (one locator or a list) or `images`; with images but no placeholder at all, the images go first in the first
  user turn, as LLaVA's own preprocessing puts them.
- The Cauldron (Parquet): {"images": [{"bytes": ...}, ...], "texts": [{"user": ..., "assistant": ...}, ...]};
  the images come first in the first user turn, then one user/assistant pair per entry of `texts`.

Each converter returns the fields of a chat-form record ({"messages": ..., "images": ...}), whose image parts
have no locator and so take the entries of "images" in order. Errors are FormatError, which `records` reports
with the source and the line or row like every other problem.
"""

from __future__ import annotations

import re

IMAGE_PLACEHOLDER = "<image>"
_PLACEHOLDER_SPLIT = re.compile(r"\s*<image>\s*")
SPEAKERS = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "system": "system",
}


class FormatError(ValueError):
    """A record that claims a known layout but breaks it; the message says which field and turn."""


def detect(fields: dict) -> str | None:
    """The layout of a record, by its keys: "conversations" (LLaVA, ShareGPT), "cauldron" or None (ours)."""
    if "messages" in fields or "prompt" in fields or "response" in fields:
        return None
    if "conversations" in fields:
        return "conversations"
    if "texts" in fields:
        return "cauldron"
    return None


def from_conversations(fields: dict) -> dict:
    """LLaVA / ShareGPT fields -> chat-form fields."""
    turns = fields["conversations"]
    if not isinstance(turns, list | tuple) or not turns:
        raise FormatError("'conversations' must be a non-empty list of {from, value} turns")
    images = _image_list(fields)
    messages = [_turn(turn, number) for number, turn in enumerate(turns, start=1)]
    placeholders = sum(part["type"] == "image" for message in messages for part in message["content"])
    if placeholders == 0 and images:
        _images_first(messages, len(images))
    elif placeholders != len(images):
        raise FormatError(
            f"the conversation has {placeholders} {IMAGE_PLACEHOLDER} placeholder(s) but {len(images)} image(s)"
        )
    return {"messages": messages, "images": images}


def from_cauldron(fields: dict) -> dict:
    """The Cauldron's fields -> chat-form fields."""
    texts = fields["texts"]
    if not isinstance(texts, list | tuple) or not texts:
        raise FormatError("'texts' must be a non-empty list of {user, assistant} pairs")
    messages = []
    for number, pair in enumerate(texts, start=1):
        if not isinstance(pair, dict) or not all(isinstance(pair.get(k), str) for k in ("user", "assistant")):
            raise FormatError(f"texts entry {number} needs 'user' and 'assistant' strings")
        messages.append({"role": "user", "content": [{"type": "text", "text": pair["user"]}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": pair["assistant"]}]})
    images = _image_list(fields)
    _images_first(messages, len(images))
    return {"messages": messages, "images": images}


def _turn(turn: object, number: int) -> dict:
    if not isinstance(turn, dict):
        raise FormatError(f"conversation turn {number} must be an object")
    speaker, value = turn.get("from", turn.get("role")), turn.get("value", turn.get("content"))
    role = SPEAKERS.get(str(speaker).lower()) if speaker is not None else None
    if role is None:
        raise FormatError(f"conversation turn {number} is from {speaker!r}; expected one of {', '.join(SPEAKERS)}")
    if not isinstance(value, str):
        raise FormatError(f"conversation turn {number} needs a 'value' string")
    return {"role": role, "content": _split_placeholders(value)}


def _split_placeholders(text: str) -> list[dict]:
    """'<image>\\nWhat is it?' -> [image, text]; the whitespace around a placeholder belongs to it."""
    pieces = _PLACEHOLDER_SPLIT.split(text)
    content: list[dict] = []
    for index, piece in enumerate(pieces):
        if index:
            content.append({"type": "image"})
        if piece:
            content.append({"type": "text", "text": piece})
    return content


def _image_list(fields: dict) -> list:
    images = fields.get("image", fields.get("images"))
    if images is None:
        return []
    return list(images) if isinstance(images, list | tuple) else [images]


def _images_first(messages: list[dict], count: int) -> None:
    if not count:
        return
    first_user = next((m for m in messages if m["role"] == "user"), None)
    if first_user is None:
        raise FormatError("the record has images but no user turn to put them in")
    first_user["content"][:0] = [{"type": "image"} for _ in range(count)]
