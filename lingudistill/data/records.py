"""One training record, normalised from the two input forms of ARCHITECTURE.md ("Dataset records"), or from the
community layouts that `formats` converts (LLaVA, ShareGPT, the Cauldron).

Chat form: {"messages": [{"role": ..., "content": "text" | [parts]}, ...]}, where a part is
{"type": "text", "text": ...}, {"type": "image", "image" | "url" | "path": LOCATOR} or
{"type": "image_url", "image_url": {"url": LOCATOR}}. An image part without a locator takes the next entry of a
top-level "images" list (the layout of Hugging Face chat datasets).
Short form: {"prompt": ..., "response": ..., "images": [LOCATOR, ...]}; the images come before the prompt text.

A locator is a path (relative to the dataset file's folder, which it must not leave), an s3:// URI or a base64
data URI; Parquet and `datasets` rows may also hold encoded bytes ({"bytes": ...}) or a PIL image. Images stay
locators until `load_image` reads them, with bounds on bytes and pixels.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image

from lingudistill import uris
from lingudistill.data import formats
from lingudistill.errors import UserInputError

ROLES = ("system", "user", "assistant")
_DATA_URI = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)
_MAGIC = {
    b"\x89PNG": "png",
    b"\xff\xd8\xff": "jpeg",
    b"GIF8": "gif",
    b"BM": "bmp",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
}
# Decoders for untrusted files: common raster formats only (PIL's EPS plugin, for one, runs Ghostscript).
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
_pil_limit_lock = threading.Lock()


class DataError(UserInputError, ValueError):
    """A problem with the training data. The message names the source and the file:line (or file:row N)."""

    def __init__(self, reason: str, *, source: str | None = None, origin: str | None = None) -> None:
        self.reason, self.source, self.origin = reason, source, origin
        where = " ".join(part for part in (source, origin) if part)
        super().__init__(f"{where}: {reason}" if where else reason)


@dataclass(frozen=True)
class ImageRef:
    """Where one image is: an absolute path, an s3:// URI or a data: URI. Loaded lazily by `load_image`."""

    kind: Literal["path", "s3", "data"]
    value: str

    def describe(self) -> str:
        return self.value if self.kind != "data" else f"{self.value[:40]}... (inline image)"


@dataclass(frozen=True)
class Record:
    messages: list[dict]  # [{"role": ..., "content": [{"type": "text", "text": ...} | {"type": "image"}]}]
    images: tuple[ImageRef, ...]  # one per image part, in order of appearance
    source: str  # mixture source name
    origin: str  # "path/to/file.jsonl:17" or "file.parquet:row 17"

    @property
    def has_images(self) -> bool:
        return bool(self.images)


def parse_record(obj: object, *, source: str, origin: str, base_dir: Path | None) -> Record:
    """Validate one raw record and normalise it. Raises DataError naming `source` and `origin`."""
    try:
        messages, images = _normalise(obj, base_dir)
        _check_conversation(messages)
    except DataError as exc:
        raise DataError(exc.reason, source=source, origin=origin) from None
    return Record(messages=messages, images=tuple(images), source=source, origin=origin)


def _normalise(obj: object, base_dir: Path | None) -> tuple[list[dict], list[ImageRef]]:
    if not isinstance(obj, dict):
        raise DataError(f"a record must be a JSON object, not {type(obj).__name__}")
    fields = {key: value for key, value in obj.items() if value is not None}  # Parquet fills missing columns
    fields = _from_known_layout(fields)
    if "messages" in fields:
        return _chat_form(fields, base_dir)
    if "prompt" in fields or "response" in fields:
        return _short_form(fields, base_dir)
    raise DataError(
        "a record needs 'messages' (chat form), 'prompt' and 'response' (short form), 'conversations' (LLaVA, "
        "ShareGPT) or 'texts' (the Cauldron)"
    )


def _from_known_layout(fields: dict) -> dict:
    """LLaVA, ShareGPT and Cauldron records become chat-form fields; ours pass through."""
    converters = {"conversations": formats.from_conversations, "cauldron": formats.from_cauldron}
    layout = formats.detect(fields)
    if layout is None:
        return fields
    try:
        return converters[layout](fields)
    except formats.FormatError as exc:
        raise DataError(str(exc)) from None


def _short_form(fields: dict, base_dir: Path | None) -> tuple[list[dict], list[ImageRef]]:
    prompt, response = fields.get("prompt", ""), fields.get("response")
    if not isinstance(prompt, str) or not isinstance(response, str):
        raise DataError("'prompt' and 'response' must be strings")
    images = [image_ref(locator, base_dir) for locator in _as_list(fields.get("images", []), "images")]
    user = [{"type": "image"} for _ in images] + ([{"type": "text", "text": prompt}] if prompt else [])
    if not user:
        raise DataError("the prompt is empty and there are no images")
    assistant = [{"type": "text", "text": response}]
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}], images


def _chat_form(fields: dict, base_dir: Path | None) -> tuple[list[dict], list[ImageRef]]:
    listed = [image_ref(locator, base_dir) for locator in _as_list(fields.get("images", []), "images")]
    messages, images = [], []
    for number, message in enumerate(_as_list(fields["messages"], "messages"), start=1):
        if not isinstance(message, dict):
            raise DataError(f"message {number} must be an object")
        role = message.get("role")
        if role not in ROLES:
            raise DataError(f"message {number} has role {role!r}; allowed: {', '.join(ROLES)}")
        content = _content(message.get("content"), number, base_dir, images, listed)
        messages.append({"role": role, "content": content})
    if listed:
        raise DataError(f"{len(listed)} entries of 'images' are not used by any image part")
    return messages, images


def _content(content: object, number: int, base_dir: Path | None, images: list, listed: list) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    parts = []
    for part in _as_list(content, f"message {number} content"):
        if not isinstance(part, dict):
            raise DataError(f"message {number}: a content part must be an object")
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise DataError(f"message {number}: a text part needs a 'text' string")
            parts.append({"type": "text", "text": part["text"]})
        elif kind in ("image", "image_url"):
            images.append(_part_image(part, number, base_dir, listed))
            parts.append({"type": "image"})
        else:
            raise DataError(f"message {number}: unknown content part type {kind!r}; expected text, image or image_url")
    return parts


def _part_image(part: dict, number: int, base_dir: Path | None, listed: list[ImageRef]) -> ImageRef:
    locator = _part_locator(part)
    if locator is not None:
        return image_ref(locator, base_dir)
    if not listed:
        raise DataError(f"message {number}: an image part has no image and the record's 'images' list is used up")
    return listed.pop(0)


def _part_locator(part: dict) -> object:
    if part["type"] == "image_url":
        url = part.get("image_url")
        return url.get("url") if isinstance(url, dict) else url
    return next((part[key] for key in ("image", "url", "path") if part.get(key) is not None), None)


def _check_conversation(messages: list[dict]) -> None:
    if not messages:
        raise DataError("'messages' is empty")
    if messages[-1]["role"] != "assistant":
        raise DataError("the last message must be an assistant turn (the text to learn)")
    assistant_text = [
        part["text"] for m in messages if m["role"] == "assistant" for part in m["content"] if part["type"] == "text"
    ]
    if not any(text.strip() for text in assistant_text):
        raise DataError("no assistant turn has any text")
    # the loss covers assistant turns, and a frozen text-only teacher cannot read image tokens there
    if any(part["type"] == "image" for m in messages if m["role"] == "assistant" for part in m["content"]):
        raise DataError("images are allowed in user and system turns only")


def _as_list(value: object, what: str) -> list:
    if not isinstance(value, list | tuple):
        raise DataError(f"'{what}' must be a list")
    return list(value)


def image_ref(locator: object, base_dir: Path | None) -> ImageRef:
    """Turn an image locator into an ImageRef, refusing paths that leave `base_dir`."""
    if isinstance(locator, dict):  # Hugging Face's Image storage: {"bytes": ..., "path": ...}
        locator = locator.get("bytes") or locator.get("path")
    if isinstance(locator, bytes | bytearray):
        return ImageRef("data", _bytes_data_uri(bytes(locator)))
    if isinstance(locator, Image.Image):
        return ImageRef("data", _png_data_uri(locator))
    if not isinstance(locator, str) or not locator:
        raise DataError(f"an image must be a path, an s3:// URI or a data URI, not {type(locator).__name__}")
    if locator.startswith("data:"):
        if not _DATA_URI.match(locator):
            raise DataError("a data URI image must look like data:image/<type>;base64,<data>")
        return ImageRef("data", locator)
    scheme = uris.uri_scheme(locator)
    if scheme == "s3":
        return _s3_image(locator)
    if scheme != "file":
        raise DataError(f"unsupported image location {locator[:100]!r}: use a path, s3:// or a base64 data URI")
    return ImageRef("path", str(_contained_path(locator, base_dir)))


def _s3_image(locator: str) -> ImageRef:
    try:
        _, key = uris.parse_s3_uri(locator)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if not key or key.endswith("/"):
        raise DataError(f"an s3:// image needs a bucket and an object key: {locator[:100]!r}")
    return ImageRef("s3", locator)


def _contained_path(locator: str, base_dir: Path | None) -> Path:
    if base_dir is None:
        raise DataError(f"local image path {locator[:100]!r} is not allowed here: the records have no dataset folder")
    base = base_dir.resolve()
    try:
        path = (base / locator.removeprefix("file://")).resolve()  # an absolute locator replaces the base
    except (ValueError, OSError) as exc:  # a NUL byte, a symlink loop (found by Hypothesis, issue 9)
        raise DataError(f"image path {locator[:100]!r} is not a usable path: {exc}") from None
    if not path.is_relative_to(base):
        raise DataError(f"image path {locator[:100]!r} leaves the dataset folder {base}")
    return path


def _bytes_data_uri(data: bytes) -> str:
    # the media type is only a label (the decoder finds the format itself), so magic bytes are enough
    kind = "webp" if data[:4] == b"RIFF" and data[8:12] == b"WEBP" else None
    kind = kind or next((name for magic, name in _MAGIC.items() if data.startswith(magic)), "unknown")
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


def _png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"


def load_image(ref: ImageRef, *, max_pixels: int = 40_000_000, max_bytes: int = 50 * 2**20) -> Image.Image:
    """Read and decode one image as RGB, refusing more than `max_bytes` of file or `max_pixels` of image."""
    image = _open_bounded(_read_bounded(ref, max_bytes), max_pixels, ref)
    try:
        image.load()
        return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:  # PIL reports broken files with all three
        raise _undecodable(ref, exc) from None


def load_images(record: Record, **limits: int) -> list[Image.Image]:
    """All images of `record`; a failure names the record's source and origin."""
    try:
        return [load_image(ref, **limits) for ref in record.images]
    except DataError as exc:
        raise DataError(exc.reason, source=record.source, origin=record.origin) from None


def _read_bounded(ref: ImageRef, max_bytes: int) -> bytes:
    if ref.kind == "data":
        payload = ref.value.partition(",")[2]
        if len(payload) * 3 // 4 > max_bytes:
            raise DataError(f"inline image is larger than {max_bytes} bytes")
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error as exc:
            raise DataError(f"inline image is not valid base64: {exc}") from None
    try:
        path = _image_path(ref)
        size = path.stat().st_size
        if size > max_bytes:
            raise DataError(f"image {ref.value} is {size} bytes, more than the limit of {max_bytes}")
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read image {ref.value}: {exc.strerror or exc}") from None


def _image_path(ref: ImageRef) -> Path:
    if ref.kind == "path":
        return Path(ref.value)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return uris.fetch(ref.value)
    except (BotoCoreError, ClientError) as exc:
        raise DataError(f"cannot download image {ref.value}: {exc}") from None


def _open_bounded(data: bytes, max_pixels: int, ref: ImageRef) -> Image.Image:
    """Open (header only) under a pixel limit, so a decompression bomb is refused before it is decoded."""
    with _pil_limit_lock, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
        try:
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            image = None
        except (OSError, SyntaxError, ValueError) as exc:
            raise _undecodable(ref, exc) from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    if image is None or image.width * image.height > max_pixels:
        raise DataError(f"image {ref.describe()} has more than {max_pixels} pixels (decompression bomb?)")
    return image


def _undecodable(ref: ImageRef, exc: Exception) -> DataError:
    return DataError(f"image {ref.describe()} does not decode: {exc}")
