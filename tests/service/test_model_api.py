"""GET /v1/jobs/{id}/model: the repaired model's manifest and downloads, only once its manifest is stored."""

from __future__ import annotations

import hashlib
import json

from service.client.client import LinguDistillClient


def _store_model(storage, job_id: str, files: dict[str, bytes]) -> dict[str, str]:
    manifest = {}
    for name, data in files.items():
        storage.put_stream(f"jobs/{job_id}/model/{name}", [data])
        manifest[name] = hashlib.sha256(data).hexdigest()
    storage.put_stream(f"jobs/{job_id}/model/manifest.json", [json.dumps({"files": manifest}).encode()])
    return manifest


def test_model_is_not_ready_until_its_manifest_is_stored(client, spec_body, storage):
    job = client.post("/v1/jobs", json=spec_body()).json()
    storage.put_stream(f"jobs/{job['id']}/model/model.safetensors", [b"half"])  # files without a manifest
    response = client.get(f"/v1/jobs/{job['id']}/model")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "model_not_ready"


def test_model_files_download_with_their_sha256(client, spec_body, storage):
    job = client.post("/v1/jobs", json=spec_body()).json()
    files = {"config.json": b'{"model_type": "llava"}', "model.safetensors": b"weights" * 100}
    manifest = _store_model(storage, job["id"], files)
    body = client.get(f"/v1/jobs/{job['id']}/model").json()
    assert body["manifest"] == manifest
    assert body["size_bytes"] == sum(len(d) for d in files.values())
    for file in body["files"]:
        response = client.get(file["url"])
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == file["sha256"] == response.headers["x-checksum-sha256"]
    missing = client.get(f"/v1/jobs/{job['id']}/model/files/other.bin")
    assert missing.status_code == 404


def test_the_client_downloads_and_verifies_the_model(client, spec_body, storage, tmp_path):
    job = client.post("/v1/jobs", json=spec_body()).json()
    files = {"config.json": b"{}", "sub/weights.safetensors": b"abc" * 10}
    _store_model(storage, job["id"], files)
    api = LinguDistillClient(base_url=str(client.base_url), api_key=client.headers["authorization"].split()[1])
    api._http = client  # the in-process app, through the client's own request path
    dest = api.download_model(job["id"], tmp_path / "model")
    assert (dest / "sub" / "weights.safetensors").read_bytes() == files["sub/weights.safetensors"]
