"""Tenant isolation over every route that takes an id, generated from the app's routes so new ones are covered."""

from __future__ import annotations

import hashlib
import json

import pytest
from fastapi.routing import APIRoute

from service.db import session_scope
from service.jobs import repository
from service.keys.service import create_key
from service.models import Job

# Operators' routes: a tenant key is refused outright (403), whoever owns the object; an admin acts on it.
ADMIN_ONLY = {("POST", "/v1/keys/{key_id}/revoke")}


@pytest.fixture
def owned(client, spec_body, sessions, storage):
    """Tenant acme's job (with a complete checkpoint, metrics, events, report and a report file), dataset, webhook
    endpoint, sweep and a second API key (not the one `client` calls with)."""
    job = client.post("/v1/jobs", json=spec_body()).json()
    dataset = client.post("/v1/datasets", params={"name": "d"}, content=b'{"prompt": "a", "response": "b"}\n').json()
    # a public address literal: the sandbox has no DNS, and the SSRF policy refuses private ones
    webhook = client.post("/v1/webhooks", json={"url": "https://93.184.215.14/hook"}).json()
    sweep = client.post("/v1/sweeps", json={"base": spec_body("swept"), "grid": {"method.kd_weight": [1]}}).json()
    data = b"weights"
    storage.put_stream(f"ckpt/{job['id']}/10/model.bin", [data])
    storage.put_stream(f"jobs/{job['id']}/artifacts/report.md", [b"# report"])
    storage.put_stream(f"jobs/{job['id']}/model/model.bin", [data])
    manifest = {"files": {"model.bin": hashlib.sha256(data).hexdigest()}}
    storage.put_stream(f"jobs/{job['id']}/model/manifest.json", [json.dumps(manifest).encode()])
    with session_scope(sessions) as session:
        session.get(Job, job["id"]).report = {"verdict": "pass"}
        session.get(Job, job["id"]).attempt = 1
        session.flush()
        repository.record_metrics(session, job["id"], 1, [(10, "loss", 1.0)])
        repository.record_checkpoint(
            session,
            job["id"],
            1,
            step=10,
            storage_prefix=f"ckpt/{job['id']}/10",
            manifest={"model.bin": hashlib.sha256(data).hexdigest()},
            size_bytes=len(data),
        )
        key_id = create_key(session, "acme").key_id
    return {
        "job_id": job["id"],
        "dataset_id": dataset["id"],
        "file_id": dataset["id"],  # the OpenAI-compatible facade's name for a dataset
        "webhook_id": webhook["id"],
        "sweep_id": sweep["id"],
        "plot": "loss.svg",
        "key_id": key_id,
        "step": "10",
        "path": "model.bin",
        "name": "report.md",
    }


def api_routes(routes):
    for route in routes:
        if hasattr(route, "original_router"):  # FastAPI keeps included routers nested
            yield from api_routes(route.original_router.routes)
        elif isinstance(route, APIRoute):
            yield route


def error_code(response) -> str:
    """The stable code of an error: problem+json's `code`, or OpenAI's envelope's under /openai/."""
    if response.request.url.path.startswith("/openai/"):
        assert response.headers["content-type"] == "application/json"
        return response.json()["error"]["code"]
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()["code"]


def id_routes(app):
    """Every (method, path, params) with an id; DELETEs last, so the admin's deletion does not hide the rest."""
    routes = [
        (method, route.path, list(route.param_convertors))
        for route in api_routes(app.routes)
        if "{" in route.path and route.path.startswith(("/v1/", "/openai/v1/"))  # /ui/static/{path} is public
        for method in sorted(route.methods)
    ]
    return sorted(routes, key=lambda r: r[0] == "DELETE")


def test_every_id_route_is_404_for_another_tenant_and_visible_to_an_admin(make_client, new_key, owned, client):
    intruder, admin = make_client(new_key("intruder")), make_client(new_key("ops", admin=True))
    routes = list(id_routes(client.app))
    assert len(routes) >= 9
    for method, template, params in routes:
        missing = set(params) - set(owned)
        assert not missing, f"add a value for {missing} of {template} to the `owned` fixture"
        url = template.replace("{path:path}", "{path}").format(**owned)
        response = intruder.request(method, url)
        status, code = (403, "forbidden") if (method, template) in ADMIN_ONLY else (404, "not_found")
        assert response.status_code == status, (method, url, response.text)
        if method == "HEAD":  # a HEAD answer has no body
            assert response.headers["content-type"] == "application/problem+json"
        else:
            assert error_code(response).endswith(code)
        assert admin.request(method, url).status_code != 404, (method, url)
    assert client.get(f"/v1/jobs/{owned['job_id']}").status_code == 200


def test_lists_show_only_the_tenants_own_objects(make_client, new_key, owned, client):
    intruder, admin = make_client(new_key("intruder")), make_client(new_key("ops", admin=True))
    assert intruder.get("/v1/jobs").json()["items"] == []
    assert intruder.get("/v1/datasets").json()["items"] == []
    assert intruder.get("/v1/sweeps").json()["items"] == []
    assert owned["sweep_id"] in [s["id"] for s in admin.get("/v1/sweeps").json()["items"]]
    assert owned["job_id"] in [j["id"] for j in admin.get("/v1/jobs").json()["items"]]
    assert owned["dataset_id"] in [d["id"] for d in admin.get("/v1/datasets").json()["items"]]
