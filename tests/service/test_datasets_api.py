"""Dataset uploads on Postgres and SQLite: streamed, hashed, stored, validated by line."""

from __future__ import annotations

import hashlib
import json

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
