"""Dataset uploads on Postgres and SQLite: streamed, hashed, stored, validated by line."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import zlib

import pytest

pytestmark = pytest.mark.parametrize("backend", ["postgres", "sqlite"], indirect=True)

GOOD = [
    {"prompt": "what colour is the sky?", "response": "blue"},
    {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
        ]
    },
]


def jsonl(records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" if not isinstance(r, bytes) else r + b"\n" for r in records)


def upload(client, body: bytes, name: str = "chat", **params):
    return client.post(
        "/v1/datasets", params={"name": name, **params}, content=body, headers={"Content-Type": "application/x-ndjson"}
    )


def test_upload_is_stored_hashed_and_validated(client, storage):
    body = jsonl(GOOD)
    response = upload(client, body)
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["id"].startswith("ds_") and dataset["uri"] == f"dataset://{dataset['id']}"
    assert dataset["status"] == "ready" and dataset["record_count"] == 2 and dataset["problems"] == []
    assert dataset["sha256"] == hashlib.sha256(body).hexdigest() and dataset["size_bytes"] == len(body)
    stored = [k for k in storage.list("datasets") if dataset["id"] in k]
    assert len(stored) == 1 and b"".join(storage.iter_bytes(stored[0])) == body
    assert client.get(f"/v1/datasets/{dataset['id']}").json() == dataset


def test_problems_are_listed_by_line(client):
    body = jsonl([GOOD[0], b"{not json", {"prompt": "no response"}, GOOD[1]])
    dataset = upload(client, body).json()
    assert dataset["status"] == "invalid" and dataset["record_count"] == 2
    origins = [p["origin"] for p in dataset["problems"]]
    assert origins == ["upload:2", "upload:3"], dataset["problems"]


def test_parquet_upload(client, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "a", "response": "b"}] * 3), path)
    dataset = upload(client, path.read_bytes(), format="parquet").json()
    assert dataset["format"] == "parquet" and dataset["record_count"] == 3, dataset


def test_oversized_upload_is_413_even_without_content_length(make_client, new_key):
    client = make_client(new_key(), max_upload_bytes=4096)

    def chunks():
        for _ in range(10):
            yield b"x" * 1024

    response = client.post("/v1/datasets", params={"name": "big"}, content=chunks())
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
    declared = client.post("/v1/datasets", params={"name": "big"}, content=b"x" * 5000)
    assert declared.status_code == 413 and declared.headers["content-type"] == "application/problem+json"


def test_list_datasets_paginates(client):
    ids = [upload(client, jsonl(GOOD), name=f"d{i}").json()["id"] for i in range(3)]
    first = client.get("/v1/datasets", params={"limit": 2}).json()
    second = client.get("/v1/datasets", params={"limit": 2, "after": first["next_cursor"]}).json()
    assert [d["id"] for d in first["items"] + second["items"]] == list(reversed(ids))
    assert second["next_cursor"] is None


def test_a_mixture_may_name_only_its_own_tenants_datasets(make_client, new_key, spec_body):
    mine, theirs = make_client(new_key("mine")), make_client(new_key("theirs"))
    own = upload(mine, jsonl(GOOD)).json()
    other = upload(theirs, jsonl(GOOD)).json()
    ok = spec_body(mixture=[{"name": "d", "uri": own["uri"], "distill": True}])
    assert mine.post("/v1/jobs", json=ok).status_code == 201
    bad = spec_body(mixture=[{"name": "d", "uri": other["uri"], "distill": True}])
    response = mine.post("/v1/jobs", json=bad)
    assert response.status_code == 422 and response.json()["code"] == "uri_not_allowed"
    assert response.json()["errors"][0]["loc"] == ["body", "mixture", 0, "uri"]
    assert "no such dataset" in response.json()["errors"][0]["msg"]


def bomb_png(side: int = 100_000) -> bytes:
    """A PNG whose header claims side x side pixels (10^10) in a few dozen bytes: opening it must not decode it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def test_an_inline_decompression_bomb_makes_the_dataset_invalid_at_upload(client):
    bomb = {"prompt": "what is this?", "response": "a bomb", "images": [data_uri(bomb_png())]}
    dataset = upload(client, jsonl([GOOD[0], bomb])).json()
    assert dataset["status"] == "invalid" and dataset["record_count"] == 1
    (problem,) = dataset["problems"]
    assert problem["origin"] == "upload:2" and "more than 40000000 pixels" in problem["message"]


def test_an_evaluation_suite_with_a_bomb_or_a_missing_image_is_invalid(client):
    question = {"question": "colour?", "choices": ["red", "blue"], "answer": 0}
    bomb = upload(client, jsonl([question, {**question, "image": data_uri(bomb_png())}]), kind="evaluation").json()
    assert bomb["status"] == "invalid" and "pixels" in bomb["problems"][0]["message"]
    assert bomb["problems"][0]["origin"] == "upload:2"
    missing = upload(client, jsonl([{**question, "image": "images/0.png"}]), kind="evaluation").json()
    assert missing["status"] == "invalid" and missing["problems"][0]["message"] == "image 0.png does not exist"
    assert upload(client, jsonl([question]), kind="evaluation").json()["status"] == "ready"


def test_a_job_may_use_only_ready_datasets_of_the_right_kind(client, spec_body):
    broken = upload(client, jsonl([b"{not json"])).json()
    suite = upload(client, jsonl([{"question": "q", "answer": "a"}]), kind="evaluation").json()
    for uri, reason in [(broken["uri"], "invalid"), (suite["uri"], "kind 'training', not 'evaluation'")]:
        response = client.post("/v1/jobs", json=spec_body(mixture=[{"name": "d", "uri": uri, "distill": True}]))
        assert response.status_code == 422 and response.json()["code"] == "uri_not_allowed"
        assert reason in response.json()["errors"][0]["msg"]


def test_the_dataset_downloads_as_uploaded_with_ranges(client):
    body = jsonl(GOOD)
    dataset = upload(client, body).json()
    whole = client.get(f"/v1/datasets/{dataset['id']}/content")
    assert whole.content == body and whole.headers["content-type"] == "application/x-ndjson"
    assert whole.headers["etag"] == f'"{dataset["sha256"]}"'
    assert whole.headers["content-disposition"] == f'attachment; filename="{dataset["id"]}.jsonl"'
    part = client.get(f"/v1/datasets/{dataset['id']}/content", headers={"Range": "bytes=2-9"})
    assert part.status_code == 206 and part.content == body[2:10]


def test_delete_is_refused_while_a_job_that_is_not_final_uses_it(client, spec_body, storage):
    dataset = upload(client, jsonl(GOOD)).json()
    spare = upload(client, jsonl(GOOD), name="spare").json()
    job = client.post("/v1/jobs", json=spec_body(mixture=[{"name": "d", "uri": dataset["uri"], "distill": True}]))
    refused = client.delete(f"/v1/datasets/{dataset['id']}")
    assert refused.status_code == 409 and refused.json()["code"] == "dataset_in_use"
    assert job.json()["id"] in refused.json()["detail"]
    assert client.delete(f"/v1/datasets/{spare['id']}").status_code == 204  # another dataset is not held

    client.post(f"/v1/jobs/{job.json()['id']}/cancel")
    assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
    assert client.get(f"/v1/datasets/{dataset['id']}").json()["code"] == "dataset_not_found"
    assert client.get(f"/v1/datasets/{dataset['id']}/content").status_code == 404
    assert not [k for k in storage.list("datasets") if dataset["id"] in k]
    retry = client.post(f"/v1/jobs/{job.json()['id']}/retry")  # its dataset is gone: refused now, not in the worker
    assert retry.status_code == 422 and retry.json()["code"] == "uri_not_allowed"


def test_another_tenant_can_neither_download_nor_delete(make_client, new_key):
    mine, theirs = make_client(new_key("mine")), make_client(new_key("theirs"))
    dataset = upload(mine, jsonl(GOOD)).json()
    assert theirs.get(f"/v1/datasets/{dataset['id']}/content").json()["code"] == "dataset_not_found"
    assert theirs.delete(f"/v1/datasets/{dataset['id']}").json()["code"] == "dataset_not_found"
    assert mine.get(f"/v1/datasets/{dataset['id']}").status_code == 200


def test_an_upload_with_an_idempotency_key_is_stored_once(client):
    headers = {"Content-Type": "application/x-ndjson", "Idempotency-Key": "upload-1"}
    first = client.post("/v1/datasets", params={"name": "chat"}, content=jsonl(GOOD), headers=headers)
    again = client.post("/v1/datasets", params={"name": "chat"}, content=jsonl(GOOD), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = client.post("/v1/datasets", params={"name": "chat"}, content=jsonl(GOOD[:1]), headers=headers)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert [d["id"] for d in client.get("/v1/datasets").json()["items"]] == [first.json()["id"]]
