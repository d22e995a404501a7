"""Every error path answers RFC 9457 application/problem+json with a stable code."""

from __future__ import annotations

from service.storage import LocalStorage

PROBLEM = "application/problem+json"


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == status and problem["code"] == code
    assert problem["type"].endswith(code) and problem["title"] and problem["instance"]
    return problem


def test_missing_and_unknown_keys_are_401(make_client):
    anonymous = make_client()
    assert_problem(anonymous.get("/v1/jobs"), 401, "unauthorized")
    response = make_client("ldk_not-a-key").get("/v1/jobs")
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


def test_health_and_docs_need_no_key(make_client):
    anonymous = make_client()
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/readyz").json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}
    assert anonymous.get("/openapi.json").status_code == 200
    assert anonymous.get("/docs").status_code == 200


def test_metrics_need_an_admin_key(make_client, new_key):
    assert_problem(make_client(new_key()).get("/metrics"), 403, "forbidden")
    make_client(new_key()).get("/v1/jobs")
    body = make_client(new_key(admin=True)).get("/metrics").text
    assert 'lingudistill_http_requests_total{method="GET",route="/v1/jobs",status="200"}' in body
    assert 'lingudistill_jobs{status="queued"}' in body
    assert "lingudistill_http_request_duration_seconds_bucket" in body


def test_unknown_route_and_wrong_method(client):
    assert_problem(client.get("/v1/nothing"), 404, "not_found")
    assert_problem(client.delete("/v1/jobs"), 405, "method_not_allowed")


def test_unknown_job_and_dataset(client):
    assert_problem(client.get("/v1/jobs/job_missing"), 404, "job_not_found")
    assert_problem(client.get("/v1/datasets/ds_missing"), 404, "dataset_not_found")


def test_values_the_database_refuses_are_422_not_500(client, spec_body):
    """Postgres cannot store or compare a NUL character: an id or a filter carrying one is the caller's error on
    every route (the database's reason, never its statement), and the spec names the field where it can."""
    for path in ("/v1/jobs/job_x%00", "/v1/jobs/job_x%00/events", "/v1/datasets/%00", "/v1/webhooks/%00"):
        problem = assert_problem(client.get(path), 422, "invalid_value")
        assert "NUL" in problem["detail"] and "SELECT" not in problem["detail"], path
    for params in ({"name": "a\x00"}, {"metadata": "team=\x00"}):
        assert_problem(client.get("/v1/jobs", params=params), 422, "invalid_value")
    body = {**spec_body(), "metadata": {"k": "\x00"}}
    problem = assert_problem(client.post("/v1/jobs", json=body), 422, "validation_error")
    assert problem["errors"][0]["loc"] == ["body", "metadata", "k"]


def test_validation_errors_list_fields(client):
    problem = assert_problem(client.post("/v1/jobs", json={"name": "x"}), 422, "validation_error")
    assert {"loc": ["body", "student"], "msg": "Field required"} in problem["errors"]
    problem = assert_problem(client.get("/v1/jobs", params={"limit": 0}), 422, "validation_error")
    assert problem["errors"][0]["loc"] == ["query", "limit"]
    assert_problem(
        client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}),
        422,
        "validation_error",
    )


def test_oversized_json_body_is_413(make_client, new_key, spec_body):
    client = make_client(new_key(), max_request_bytes=2048)
    body = spec_body(metadata={f"k{i}": "v" * 200 for i in range(20)})
    assert_problem(client.post("/v1/jobs", json=body), 413, "payload_too_large")

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(10):
            yield b" " * 1024

    response = client.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert_problem(response, 413, "payload_too_large")


def test_rate_limit_is_429_with_retry_after(make_client, new_key):
    client = make_client(new_key(), rate_limit_per_s=0.5, rate_limit_burst=3)
    statuses = [client.get("/v1/jobs").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = client.get("/v1/jobs")
    assert_problem(response, 429, "rate_limited")
    assert int(response.headers["retry-after"]) >= 1
    assert make_client(new_key(), rate_limit_per_s=0.5, rate_limit_burst=3).get("/v1/jobs").status_code == 200


def test_unhandled_errors_are_500_without_internals(make_client, new_key, monkeypatch):
    from service.jobs import service

    def boom(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(service, "list_jobs", boom)
    response = make_client(new_key(), raise_server_exceptions=False).get("/v1/jobs")
    problem = assert_problem(response, 500, "internal_error")
    assert "secret" not in response.text and "detail" not in problem


def test_readyz_is_503_when_storage_is_unreachable(make_client, tmp_path, monkeypatch):
    client = make_client()
    storage = client.app.state.services.storage
    assert isinstance(storage, LocalStorage)

    def broken() -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(storage, "check", broken)
    problem = assert_problem(client.get("/readyz"), 503, "not_ready")
    assert "storage" in problem["detail"]


def test_checkpoint_download_refuses_traversal(client, spec_body):
    job = client.post("/v1/jobs", json=spec_body()).json()
    response = client.get(f"/v1/jobs/{job['id']}/checkpoints/1/files/..%2F..%2Fetc%2Fpasswd")
    assert_problem(response, 404, "checkpoint_not_found")


def test_openapi_declares_problem_responses_on_every_route(client):
    schema = client.get("/openapi.json").json()
    assert "Problem" in schema["components"]["schemas"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            expected = {"500"} if path in ("/healthz", "/readyz") else {"401", "422", "429", "500"}
            assert expected <= set(responses), (method, path)
            # the OpenAI-compatible facade answers OpenAI's error envelope instead (service/openai_api)
            error_type = "application/json" if path.startswith("/openai/") else "application/problem+json"
            for status, response in responses.items():
                if int(status) >= 400:
                    assert error_type in response["content"], (method, path, status)
            if any(key in path for key in ("{job_id}", "{dataset_id}", "{file_id}")):
                assert "404" in responses, (method, path)


def test_openapi_422_is_a_problem_not_fastapis_default(client):
    schema = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert "/v1/jobs/{job_id}" in schema["paths"]
