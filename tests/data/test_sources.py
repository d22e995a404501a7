"""Sources (JSONL, Parquet, folders, s3://, hf://), whole-source validation, and uris.fetch with its S3 cache."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lingudistill import uris
from lingudistill.data.records import DataError, load_image
from lingudistill.data.sources import load_sources, read_source, validate_sources
from lingudistill.spec import MixtureSource

from .conftest import Bucket, chat, png_bytes, write_jsonl


def source(uri: str | Path, name: str = "vqa", **extra: object) -> MixtureSource:
    return MixtureSource(name=name, uri=str(uri), **extra)


@pytest.fixture
def vqa_dir(tmp_path: Path) -> Path:
    """A dataset folder: train.jsonl with a blank line, and the image it names."""
    folder = tmp_path / "vqa"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "0.png").write_bytes(png_bytes((255, 0, 0)))
    write_jsonl(
        folder / "train.jsonl",
        [chat("colour?", "red", image="images/0.png"), "", {"prompt": "2+2?", "response": "4"}],
    )
    return folder


# --- reading -----------------------------------------------------------------------------------------------------


def test_jsonl_records_carry_their_line_numbers(vqa_dir: Path) -> None:
    records = list(read_source(source(vqa_dir / "train.jsonl")))
    assert [r.origin for r in records] == [f"{vqa_dir / 'train.jsonl'}:1", f"{vqa_dir / 'train.jsonl'}:3"]
    assert records[0].has_images and not records[1].has_images
    assert {r.source for r in records} == {"vqa"}
    assert load_image(records[0].images[0]).getpixel((0, 0)) == (255, 0, 0)


def test_file_uris_work_like_paths(vqa_dir: Path) -> None:
    assert len(list(read_source(source(f"file://{vqa_dir / 'train.jsonl'}")))) == 2


def test_a_malformed_line_names_the_source_and_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "text.jsonl", [{"prompt": "a", "response": "b"}, "", '{"prompt": "a", "resp'])
    with pytest.raises(DataError, match=rf"^text {path}:3: invalid JSON: ") as error:
        list(read_source(source(path, name="text")))
    assert error.value.source == "text" and error.value.origin == f"{path}:3"


def test_a_byte_order_mark_is_tolerated_and_bad_utf8_named(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "a", "response": "b"}\n{"prompt": "\xff", "response": "b"}\n')
    reader = read_source(source(path))
    assert next(reader).origin.endswith("bom.jsonl:1")
    with pytest.raises(DataError, match=r"bom\.jsonl:2: not UTF-8"):
        next(reader)


def test_parquet_rows_are_records(tmp_path: Path) -> None:
    path = tmp_path / "text.parquet"
    pq.write_table(pa.table({"prompt": [f"q{i}" for i in range(5)], "response": [f"a{i}" for i in range(5)]}), path)
    records = list(read_source(source(path, name="text")))
    assert [r.origin for r in records] == [f"{path}:row {i}" for i in range(1, 6)]
    assert records[4].messages[1]["content"] == [{"type": "text", "text": "a4"}]


def test_parquet_chat_rows_with_embedded_image_bytes(tmp_path: Path) -> None:
    """The layout Hugging Face writes: messages with locator-less image parts, images as {bytes, path} structs."""
    messages = [
        {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "colour?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "green"}]},
    ]
    table = pa.table({"messages": [messages], "images": [[{"bytes": png_bytes((0, 255, 0)), "path": None}]]})
    pq.write_table(table, tmp_path / "vqa.parquet")
    (record,) = read_source(source(tmp_path / "vqa.parquet"))
    assert record.messages[0]["content"] == [{"type": "image"}, {"type": "text", "text": "colour?"}]
    assert load_image(record.images[0]).getpixel((0, 0)) == (0, 255, 0)


def test_a_folder_is_read_file_by_file_in_sorted_order(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data" / "b.jsonl", [{"prompt": "b", "response": "1"}])
    write_jsonl(tmp_path / "data" / "a.jsonl", [{"prompt": "a", "response": "1"}, {"prompt": "a", "response": "2"}])
    write_jsonl(tmp_path / "data" / "sub" / "c.jsonl", [{"prompt": "c", "response": "1"}])
    pq.write_table(pa.table({"prompt": ["p"], "response": ["1"]}), tmp_path / "data" / "a2.parquet")
    (tmp_path / "data" / "README.md").write_text("not data")
    write_jsonl(tmp_path / "data" / ".hidden" / "x.jsonl", ["not even json"])
    origins = [r.origin for r in read_source(source(tmp_path / "data"))]
    base = tmp_path / "data"
    assert origins == [
        f"{base}/a.jsonl:1",
        f"{base}/a.jsonl:2",
        f"{base}/a2.parquet:row 1",
        f"{base}/b.jsonl:1",
        f"{base}/sub/c.jsonl:1",
    ]


def test_max_records_stops_early(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"prompt": str(i), "response": "x"} for i in range(10)] + ["broken"])
    records = list(read_source(source(path, max_records=4)))
    assert [r.messages[0]["content"][0]["text"] for r in records] == ["0", "1", "2", "3"]


def test_load_sources_reads_every_source(vqa_dir: Path, tmp_path: Path) -> None:
    text = write_jsonl(tmp_path / "text.jsonl", [{"prompt": "q", "response": "a"}] * 3)
    loaded = load_sources([source(vqa_dir), source(text, name="text")])
    assert {name: len(records) for name, records in loaded.items()} == {"vqa": 2, "text": 3}


def test_unsupported_file_types_are_refused(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("prompt,response\n")
    with pytest.raises(DataError, match="unsupported file type"):
        list(read_source(source(tmp_path / "data.csv")))


def test_an_s3_file_source_names_the_s3_uri_in_origins(bucket: Bucket) -> None:
    bucket.put("data/text.jsonl", '{"prompt": "q", "response": "a"}\n{"prompt": "q2", "response": "a2"}\n')
    records = list(read_source(source(bucket.uri("data/text.jsonl"))))
    assert [r.origin for r in records] == [bucket.uri("data/text.jsonl:1"), bucket.uri("data/text.jsonl:2")]


def test_an_s3_prefix_source_resolves_relative_images(bucket: Bucket) -> None:
    bucket.put("vqa/train.jsonl", '{"prompt": "colour?", "response": "blue", "images": ["images/0.png"]}\n')
    bucket.put("vqa/images/0.png", png_bytes((0, 0, 255)))
    (record,) = read_source(source(bucket.uri("vqa")))
    assert record.origin == bucket.uri("vqa/train.jsonl:1")
    assert load_image(record.images[0]).getpixel((0, 0)) == (0, 0, 255)


def test_hf_sources_need_the_datasets_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(ImportError, match="pip install datasets"):
        list(read_source(source("hf://org/name")))


def test_hf_sources_are_read_through_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def load_dataset(repo_id: str, *, revision: str | None, split: str) -> list[dict]:
        calls.append((repo_id, revision, split))
        return [{"prompt": "q", "response": "a"}, {"messages": [{"role": "assistant", "content": "hi"}]}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    records = list(read_source(source("hf://org/name@abc123#validation")))
    assert calls == [("org/name", "abc123", "validation")]
    assert [r.origin for r in records] == [
        "hf://org/name@abc123#validation:row 1",
        "hf://org/name@abc123#validation:row 2",
    ]


# --- validation --------------------------------------------------------------------------------------------------


def test_validation_counts_good_sources(vqa_dir: Path, tmp_path: Path) -> None:
    text = write_jsonl(tmp_path / "text.jsonl", [{"prompt": "q", "response": "a"}] * 5)
    report = validate_sources([source(vqa_dir / "train.jsonl"), source(text, name="text", max_records=3)])
    assert report.ok and report.problems == []
    assert report.counts == {"vqa": 2, "text": 3}
    report.raise_if_failed()


def test_validation_collects_every_problem_with_its_place(vqa_dir: Path, tmp_path: Path) -> None:
    (vqa_dir / "images" / "broken.png").write_bytes(b"not an image")
    path = write_jsonl(
        vqa_dir / "train.jsonl",
        [
            chat("q", "a", image="images/0.png"),
            "{broken",
            chat("q", "a", image="images/broken.png"),
            chat("q", "a", image="../../etc/passwd"),
            {"messages": [{"role": "user", "content": "no answer"}]},
            chat("q", "a", image="images/missing.png"),
        ],
    )
    empty = write_jsonl(tmp_path / "empty.jsonl", [""])
    sources = [
        source(path),
        source(empty, name="empty"),
        source(tmp_path / "nowhere.jsonl", name="missing"),
        source("dataset://ds_123", name="uploaded"),
    ]
    report = validate_sources(sources)

    assert not report.ok
    assert report.counts == {"vqa": 1, "empty": 0, "missing": 0, "uploaded": 0}
    found = {(p.source, p.origin.rsplit("/", 1)[-1]): p.message for p in report.problems}
    assert found[("vqa", "train.jsonl:2")].startswith("invalid JSON")
    assert "broken.png does not decode" in found[("vqa", "train.jsonl:3")]
    assert "leaves the dataset folder" in found[("vqa", "train.jsonl:4")]
    assert "assistant" in found[("vqa", "train.jsonl:5")]
    assert "missing.png" in found[("vqa", "train.jsonl:6")]
    assert found[("empty", "empty.jsonl")] == "the source has no valid records"
    assert "no such file" in found[("missing", "nowhere.jsonl")]
    assert "must be resolved by the service" in found[("uploaded", "ds_123")]

    with pytest.raises(DataError) as error:
        report.raise_if_failed()
    assert str(error.value).startswith(f"{report.total_problems} problem(s) in the training data:")
    assert f"vqa {path}:2: invalid JSON" in str(error.value)


def test_validation_without_decoding_still_checks_image_files_exist(vqa_dir: Path) -> None:
    (vqa_dir / "images" / "broken.png").write_bytes(b"not an image")
    write_jsonl(
        vqa_dir / "train.jsonl", [chat("q", "a", image="images/broken.png"), chat("q", "a", image="images/x.png")]
    )
    report = validate_sources([source(vqa_dir / "train.jsonl")], decode_images=False)
    assert report.counts == {"vqa": 1}
    assert [p.origin.rsplit(":", 1)[-1] for p in report.problems] == ["2"]


def test_validation_keeps_the_first_problems_and_counts_all(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", ["{"] * 30 + [{"prompt": "q", "response": "a"}])
    report = validate_sources([source(path)], max_problems=5)
    assert report.counts == {"vqa": 1}
    assert len(report.problems) == 5 and report.total_problems == 30
    with pytest.raises(DataError, match="and 25 more"):
        report.raise_if_failed()


# --- uris --------------------------------------------------------------------------------------------------------


def test_fetch_returns_local_paths_and_names_missing_ones(tmp_path: Path) -> None:
    assert uris.fetch(str(tmp_path)) == tmp_path
    assert uris.fetch(f"file://{tmp_path}") == tmp_path
    with pytest.raises(FileNotFoundError, match=r"file:///no/such/model"):
        uris.fetch("file:///no/such/model")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("dataset://ds_123", "dataset://ds_123 must be resolved by the service before training"),
        ("ftp://host/file", "unsupported URI scheme 'ftp'"),
        ("hf://org/name", "from_pretrained"),
    ],
)
def test_fetch_refuses_what_it_cannot_fetch(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        uris.fetch(uri)


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("hf://Qwen/Qwen2-1.5B-Instruct", ("Qwen/Qwen2-1.5B-Instruct", None, None)),
        ("hf://Qwen/Qwen2-1.5B-Instruct@5d9e2b1", ("Qwen/Qwen2-1.5B-Instruct", "5d9e2b1", None)),
        ("hf://org/data@main#train", ("org/data", "main", "train")),
        ("hf://org/data#validation", ("org/data", None, "validation")),
        ("hf://gpt2", ("gpt2", None, None)),
    ],
)
def test_parse_hf_uri(uri: str, parsed: tuple) -> None:
    assert uris.parse_hf_uri(uri) == parsed


@pytest.mark.parametrize("uri", ["hf://", "hf://a/b/c", "s3://bucket/key", "hf://org/name@", "hf://org/na me"])
def test_parse_hf_uri_refuses_malformed_uris(uri: str) -> None:
    with pytest.raises(ValueError, match="not a valid hf:// URI"):
        uris.parse_hf_uri(uri)


@pytest.fixture
def download_counter(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    downloaded: list[str] = []
    original = uris._download

    def counting(client: object, bucket: str, obj: uris._S3Object, dest: Path) -> None:
        downloaded.append(obj.key)
        original(client, bucket, obj, dest)

    monkeypatch.setattr(uris, "_download", counting)
    return downloaded


def _put_model(bucket: Bucket, weights: bytes = b"weights-v1") -> None:
    bucket.put("models/tiny/config.json", '{"model_type": "tiny"}')
    bucket.put("models/tiny/model.safetensors", weights)
    bucket.put("models/tiny/tokenizer/vocab.txt", "a\nb\n")
    bucket.put("models/tiny-other/config.json", "{}")  # shares the prefix text, is not in the folder


def test_fetch_an_s3_prefix_into_the_cache(bucket: Bucket, download_counter: list[str], tmp_path: Path) -> None:
    _put_model(bucket)
    folder = uris.fetch(bucket.uri("models/tiny"))

    assert folder.name == "tiny" and folder.is_relative_to(tmp_path / "cache" / "s3")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == ["config.json", "model.safetensors", "tokenizer/vocab.txt"]
    assert (folder / "model.safetensors").read_bytes() == b"weights-v1"
    assert len(download_counter) == 3
    assert uris.fetch(bucket.uri("models/tiny/")) == folder  # a trailing slash names the same folder


def test_an_unchanged_s3_folder_is_reused(bucket: Bucket, download_counter: list[str]) -> None:
    _put_model(bucket)
    folder = uris.fetch(bucket.uri("models/tiny"))
    mtime = (folder / "model.safetensors").stat().st_mtime_ns

    assert uris.fetch(bucket.uri("models/tiny")) == folder
    assert len(download_counter) == 3
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime


def test_a_changed_s3_object_is_downloaded_again(bucket: Bucket, download_counter: list[str]) -> None:
    _put_model(bucket)
    old = uris.fetch(bucket.uri("models/tiny"))
    bucket.put("models/tiny/model.safetensors", b"weights-v2")
    new = uris.fetch(bucket.uri("models/tiny"))

    assert new != old and (new / "model.safetensors").read_bytes() == b"weights-v2"
    assert (old / "model.safetensors").read_bytes() == b"weights-v1"  # a reader of the old entry is undisturbed
    assert len(download_counter) == 6


def test_a_single_s3_object_keeps_its_name(bucket: Bucket) -> None:
    bucket.put("data/train.jsonl", "{}\n")
    path = uris.fetch(bucket.uri("data/train.jsonl"))
    assert path.name == "train.jsonl" and path.read_text() == "{}\n"


def test_a_half_download_is_never_used(bucket: Bucket, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _put_model(bucket)
    original = uris._download

    def failing_on_weights(client: object, bucket_name: str, obj: uris._S3Object, dest: Path) -> None:
        if obj.key.endswith("model.safetensors"):
            raise ConnectionError("connection reset")
        original(client, bucket_name, obj, dest)

    monkeypatch.setattr(uris, "_download", failing_on_weights)
    with pytest.raises(ConnectionError):
        uris.fetch(bucket.uri("models/tiny"))
    assert list((tmp_path / "cache" / "s3").iterdir()) == []  # no entry, no leftover staging folder

    monkeypatch.setattr(uris, "_download", original)
    folder = uris.fetch(bucket.uri("models/tiny"))
    assert (folder / "model.safetensors").read_bytes() == b"weights-v1"


def test_an_object_changing_during_download_is_fetched_again(bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache entry is named by the ETags listed, so it must never hold another version's bytes."""
    _put_model(bucket)
    original = uris._download

    replaced: list[str] = []

    def replaced_midway(client: object, bucket_name: str, obj: uris._S3Object, dest: Path) -> None:
        if obj.key.endswith("model.safetensors") and not replaced:
            bucket.put(obj.key, b"weights-v2")  # after the listing, before the download
            replaced.append(obj.key)
        original(client, bucket_name, obj, dest)

    monkeypatch.setattr(uris, "_download", replaced_midway)
    folder = uris.fetch(bucket.uri("models/tiny"))
    assert (folder / "model.safetensors").read_bytes() == b"weights-v2"
    monkeypatch.setattr(uris, "_download", original)
    assert uris.fetch(bucket.uri("models/tiny")) == folder


def test_a_missing_s3_object_is_named(bucket: Bucket) -> None:
    with pytest.raises(FileNotFoundError, match=rf"s3://{bucket.name}/nothing/here"):
        uris.fetch(bucket.uri("nothing/here"))


def test_the_cache_folder_can_be_given(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put("x.txt", "x")
    assert uris.fetch(bucket.uri("x.txt"), cache_dir=tmp_path / "elsewhere").is_relative_to(tmp_path / "elsewhere")
