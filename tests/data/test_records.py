"""Records: both input forms, image locators and their safety rules, and bounded image loading."""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
from PIL import Image

from lingudistill.data.records import DataError, ImageRef, Record, load_image, load_images, parse_record

from .conftest import Bucket, chat, png_bytes


def parse(obj: object, base_dir: Path | None = None) -> Record:
    return parse_record(obj, source="vqa", origin="data/train.jsonl:7", base_dir=base_dir)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "dataset"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "0.png").write_bytes(png_bytes((255, 0, 0)))
    return folder


def test_chat_form_is_normalised_with_a_relative_image(dataset_dir: Path) -> None:
    record = parse(chat("what colour is the square?", "red", image="images/0.png"), dataset_dir)

    assert record.messages == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what colour is the square?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
    ]
    assert record.images == (ImageRef("path", str((dataset_dir / "images" / "0.png").resolve())),)
    assert record.has_images and record.source == "vqa" and record.origin == "data/train.jsonl:7"
    assert load_image(record.images[0]).getpixel((0, 0)) == (255, 0, 0)


def test_short_form_puts_images_before_the_prompt(dataset_dir: Path) -> None:
    record = parse({"prompt": "describe", "response": "a red square", "images": ["images/0.png"]}, dataset_dir)

    assert record.messages[0] == {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe"}]}
    assert record.messages[1] == {"role": "assistant", "content": [{"type": "text", "text": "a red square"}]}
    assert len(record.images) == 1


def test_text_only_records_have_no_images() -> None:
    record = parse({"prompt": "2+2?", "response": "4"})
    assert not record.has_images and record.images == ()


def test_system_turns_and_multi_turn_conversations_are_kept() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": [{"type": "text", "text": "and?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "bye"}]},
    ]
    record = parse({"messages": messages, "id": 17})
    assert [m["role"] for m in record.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert record.messages[0]["content"] == [{"type": "text", "text": "be brief"}]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image", "url": "images/0.png"},
        {"type": "image", "path": "images/0.png"},
        {"type": "image_url", "image_url": {"url": "images/0.png"}},
    ],
)
def test_image_parts_accept_the_common_locator_keys(dataset_dir: Path, part: dict) -> None:
    record = parse(
        {"messages": [{"role": "user", "content": [part]}, {"role": "assistant", "content": "x"}]}, dataset_dir
    )
    assert record.messages[0]["content"] == [{"type": "image"}]
    assert record.images[0].kind == "path"


def test_base64_data_uri_images_decode() -> None:
    record = parse(chat("colour?", "green", image=data_uri(png_bytes((0, 255, 0)))))
    assert record.images[0].kind == "data"
    image = load_image(record.images[0])
    assert image.mode == "RGB" and image.size == (4, 3) and image.getpixel((1, 1)) == (0, 255, 0)


def test_images_are_converted_to_rgb() -> None:
    record = parse(chat("colour?", "grey", image=data_uri(png_bytes((128, 0, 0), mode="L"))))
    assert load_image(record.images[0]).getpixel((0, 0)) == (128, 128, 128)


def test_s3_images_are_downloaded_when_loaded(bucket: Bucket) -> None:
    bucket.put("images/blue.png", png_bytes((0, 0, 255)))
    record = parse(chat("colour?", "blue", image=bucket.uri("images/blue.png")))
    assert record.images == (ImageRef("s3", bucket.uri("images/blue.png")),)
    assert load_image(record.images[0]).getpixel((0, 0)) == (0, 0, 255)


def test_hugging_face_layout_with_a_top_level_image_list() -> None:
    """Image parts without a locator take the record's "images" in order; encoded bytes are accepted."""
    record = parse(
        {
            "messages": [
                {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "q"}]},
                {"role": "user", "content": [{"type": "image"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
            ],
            "images": [{"bytes": png_bytes((1, 2, 3)), "path": None}, png_bytes((4, 5, 6))],
        }
    )
    assert [load_image(ref).getpixel((0, 0)) for ref in record.images] == [(1, 2, 3), (4, 5, 6)]


@pytest.mark.parametrize("locator", ["../secret.png", "images/../../secret.png", "/etc/passwd"])
def test_image_paths_must_stay_inside_the_dataset_folder(dataset_dir: Path, locator: str) -> None:
    (dataset_dir.parent / "secret.png").write_bytes(png_bytes())
    with pytest.raises(DataError, match="leaves the dataset folder") as error:
        parse(chat("q", "a", image=locator), dataset_dir)
    assert "vqa data/train.jsonl:7" in str(error.value)


def test_absolute_paths_inside_the_dataset_folder_are_allowed(dataset_dir: Path) -> None:
    record = parse(chat("q", "a", image=str(dataset_dir / "images" / "0.png")), dataset_dir)
    assert record.images[0].value == str((dataset_dir / "images" / "0.png").resolve())


def test_a_symlink_out_of_the_dataset_folder_is_refused(dataset_dir: Path) -> None:
    (dataset_dir.parent / "outside.png").write_bytes(png_bytes())
    (dataset_dir / "images" / "link.png").symlink_to(dataset_dir.parent / "outside.png")
    with pytest.raises(DataError, match="leaves the dataset folder"):
        parse(chat("q", "a", image="images/link.png"), dataset_dir)


def test_local_paths_need_a_dataset_folder() -> None:
    with pytest.raises(DataError, match="no dataset folder"):
        parse(chat("q", "a", image="/etc/passwd"), base_dir=None)


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ([1, 2], "must be a JSON object"),
        ({"text": "hi"}, "needs 'messages'"),
        ({"messages": []}, "'messages' is empty"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "last message must be an assistant turn"),
        ({"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}]}, "last message"),
        ({"messages": [{"role": "assistant", "content": "  "}]}, "no assistant turn has any text"),
        ({"messages": [{"role": "bot", "content": "hi"}]}, "role 'bot'"),
        ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "unknown content part type 'audio'"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "needs a 'text' string"),
        ({"messages": [{"role": "user", "content": 3}]}, "must be a list"),
        ({"prompt": "q", "response": ""}, "no assistant turn has any text"),
        ({"prompt": "q"}, "must be strings"),
        ({"prompt": "", "response": "a"}, "prompt is empty"),
        ({"prompt": "q", "response": "a", "images": "x.png"}, "'images' must be a list"),
        (chat("q", "a", image="https://example.com/x.png"), "unsupported image location"),
        (chat("q", "a", image="data:text/plain;base64,aGk="), "data:image/<type>;base64"),
        (chat("q", "a", image="data:image/png,rawbytes"), "data:image/<type>;base64"),
        (chat("q", "a", image="s3://bucket-only"), "needs a bucket and an object key"),
        (chat("q", "a", image="s3://No_Such_Bucket/x.png"), "not a valid s3:// URI"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image"}]}, {"role": "assistant", "content": "a"}]},
            "no image",
        ),
        ({"prompt": "q", "response": "a", "messages": None, "images": [None]}, "must be a path"),
    ],
)
def test_invalid_records_are_refused_with_source_and_origin(obj: object, reason: str) -> None:
    with pytest.raises(DataError) as error:
        parse(obj)
    assert reason in str(error.value)
    assert str(error.value).startswith("vqa data/train.jsonl:7: ")
    assert error.value.source == "vqa" and error.value.origin == "data/train.jsonl:7"


def test_images_inside_assistant_turns_are_refused() -> None:
    record = {
        "messages": [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": [{"type": "image", "image": "s3://bucket/k.png"}, {"type": "text", "text": "a"}],
            },
        ]
    }
    with pytest.raises(DataError, match="user and system turns only"):
        parse(record)


def test_unused_entries_of_the_image_list_are_refused() -> None:
    with pytest.raises(DataError, match="not used by any image part"):
        parse(
            {
                "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                "images": [png_bytes()],
            }
        )


def test_an_image_that_does_not_decode_is_named(dataset_dir: Path) -> None:
    (dataset_dir / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    record = parse(chat("q", "a", image="images/broken.png"), dataset_dir)
    with pytest.raises(DataError, match=r"broken\.png does not decode"):
        load_image(record.images[0])
    with pytest.raises(DataError, match=r"^vqa data/train.jsonl:7: image .*broken\.png does not decode"):
        load_images(record)


def test_a_truncated_image_is_named(dataset_dir: Path) -> None:
    (dataset_dir / "images" / "cut.png").write_bytes(png_bytes(size=(64, 64))[:-30])
    record = parse(chat("q", "a", image="images/cut.png"), dataset_dir)
    with pytest.raises(DataError, match=r"cut\.png"):
        load_image(record.images[0])


def test_a_missing_image_file_is_named(dataset_dir: Path) -> None:
    record = parse(chat("q", "a", image="images/missing.png"), dataset_dir)
    with pytest.raises(DataError, match=r"cannot read image .*missing\.png"):
        load_image(record.images[0])


def test_invalid_base64_is_refused() -> None:
    with pytest.raises(DataError, match="not valid base64"):
        load_image(ImageRef("data", "data:image/png;base64,@@@not-base64@@@"))


def test_files_over_the_byte_limit_are_refused(dataset_dir: Path) -> None:
    ref = parse(chat("q", "a", image="images/0.png"), dataset_dir).images[0]
    with pytest.raises(DataError, match="more than the limit of 10"):
        load_image(ref, max_bytes=10)
    with pytest.raises(DataError, match="larger than 10 bytes"):
        load_image(ImageRef("data", data_uri(png_bytes())), max_bytes=10)


def test_images_over_the_pixel_limit_are_refused() -> None:
    ref = ImageRef("data", data_uri(png_bytes(size=(100, 100))))
    with pytest.raises(DataError, match="more than 9999 pixels"):
        load_image(ref, max_pixels=9_999)
    assert load_image(ref, max_pixels=10_000).size == (100, 100)


def test_formats_outside_the_allow_list_are_not_decoded(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "x.ico", format="ICO")
    with pytest.raises(DataError, match="does not decode"):
        load_image(ImageRef("path", str(tmp_path / "x.ico")))


def _png_bomb(path: Path, side: int) -> None:
    """A valid greyscale PNG of side x side black pixels, compressed to a few hundred KB, written row by row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row = zlib.compressobj(9), bytes(side + 1)  # filter byte 0, then the row
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_refused_within_bounded_memory(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    _png_bomb(bomb, side=20_000)  # 400 M pixels: 400 MB greyscale, 1.2 GB as RGB if it were decoded
    assert bomb.stat().st_size < 2 * 2**20
    script = textwrap.dedent(
        f"""
        import json, resource
        from lingudistill.data.records import DataError, ImageRef, load_image
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_image(ImageRef("path", {str(bomb)!r}))
            message = None
        except DataError as exc:
            message = str(exc)
        grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(json.dumps({{"message": message, "grown_kb": grown_kb}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=os.environ)
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["message"] is not None and "more than 40000000 pixels" in outcome["message"]
    assert "bomb.png" in outcome["message"]
    assert outcome["grown_kb"] < 64 * 1024  # the 2 MB file is read, the 400 MB image is never allocated


def test_pil_limit_is_restored_after_loading() -> None:
    before = Image.MAX_IMAGE_PIXELS
    load_image(ImageRef("data", data_uri(png_bytes())), max_pixels=123)
    after = Image.MAX_IMAGE_PIXELS
    assert after == before
