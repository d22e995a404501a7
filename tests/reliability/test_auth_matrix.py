"""Every documented route needs a key, and the tenant-isolation matrix covers every documented route with an id.

The isolation matrix itself (tenant B gets 404 on each of tenant A's jobs, events, metrics, checkpoints, checkpoint
files, model files, reports, report files, datasets and webhooks; an admin sees them) is
tests/service/test_isolation.py; this file ties it to the OpenAPI document so a new route cannot slip past it."""

from __future__ import annotations

import re

from tests.service.test_isolation import error_code, id_routes

PUBLIC = {"/healthz", "/readyz"}  # and the docs themselves (/openapi.json, /docs), which are not operations
METHODS = {"get", "post", "put", "patch", "delete"}


def operations(schema: dict) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method in METHODS and path not in PUBLIC
    ]


def test_every_route_but_health_and_docs_answers_401_problem_without_a_valid_key(make_client) -> None:
    anonymous, forged = make_client(), make_client("ldk_forged-key")
    schema = anonymous.get("/openapi.json").json()
    ops = operations(schema)
    assert len(ops) >= 20, ops
    for method, template in ops:
        url = re.sub(r"\{[^}]+\}", "x1", template)
        for client in (anonymous, forged):
            response = client.request(method, url, json={} if method in ("POST", "PUT", "PATCH") else None)
            assert response.status_code == 401, (method, url, response.status_code, response.text)
            assert error_code(response) == "unauthorized"
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert anonymous.get(path).status_code == 200, path


def test_the_isolation_matrix_covers_every_documented_route_with_an_id(client) -> None:
    schema = client.get("/openapi.json").json()
    documented = {(m, p) for m, p in operations(schema) if "{" in p}
    matrix = {(m, p.replace("{path:path}", "{path}")) for m, p, _ in id_routes(client.app)}
    assert documented, "no documented route takes an id"
    assert documented <= matrix, f"not in tests/service/test_isolation.py's matrix: {sorted(documented - matrix)}"
