"""The OpenAPI document says how to authenticate and what the event stream is (issue 15)."""

from __future__ import annotations

PUBLIC = {"/healthz", "/readyz"}  # /metrics needs an admin key


def test_every_authenticated_operation_requires_the_bearer_scheme(client):
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (`ldk_...`) from `lingudistill keys create` or POST /v1/keys.",
    }
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            expected = None if path in PUBLIC or path.startswith("/ui") else [{"bearerAuth": []}]
            assert operation.get("security") == expected, (method, path)


def test_the_events_route_declares_its_event_stream(client):
    response = client.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]
    assert set(response["content"]) == {"application/json", "text/event-stream"}
    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/EventPage"}
