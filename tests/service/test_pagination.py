"""Every list route pages through the one keyset helper (service.pagination): newest first, no row twice, none
missed, and `has_more` says whether another page follows, on Postgres and SQLite."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.parametrize("backend", ["postgres", "sqlite"], indirect=True)


def walk(client: TestClient, path: str, limit: int, **filters: str) -> tuple[list[str], list[bool]]:
    """Every id of a list route, page by page, and each page's has_more."""
    ids: list[str] = []
    more: list[bool] = []
    params: dict[str, Any] = {"limit": limit, **filters}
    while True:
        page = client.get(path, params=params).json()
        ids += [item["id"] for item in page["items"]]
        more.append(page["has_more"])
        assert page["has_more"] is (page["next_cursor"] is not None)
        if not page["has_more"]:
            return ids, more
        params["after"] = page["next_cursor"]


def test_jobs_pages_say_whether_more_follow(client: TestClient, spec_body: Callable[..., dict[str, Any]]) -> None:
    created = [client.post("/v1/jobs", json=spec_body(f"job-{i}")).json()["id"] for i in range(5)]
    ids, more = walk(client, "/v1/jobs", 2)
    assert ids == created[::-1]
    assert more == [True, True, False]
    exact, more = walk(client, "/v1/jobs", 5)
    assert exact == created[::-1] and more == [False]


def test_webhook_and_key_pages_use_the_same_cursor(
    make_client: Callable[..., TestClient], new_key: Callable[..., str]
) -> None:
    admin = make_client(new_key("ops", admin=True), allow_private_network=True)
    hooks = [admin.post("/v1/webhooks", json={"url": f"http://127.0.0.1:9/{i}"}).json()["id"] for i in range(3)]
    ids, more = walk(admin, "/v1/webhooks", 2)
    assert ids == hooks[::-1] and more == [True, False]
    tenant = f"pager-{secrets.token_hex(3)}"
    for _ in range(4):
        new_key(tenant)
    ids, more = walk(admin, "/v1/keys", 2, tenant=tenant)
    assert len(ids) == len(set(ids)) == 4 and more == [True, False]


def test_a_forged_cursor_is_a_422_problem(client: TestClient) -> None:
    for path in ("/v1/jobs", "/v1/datasets", "/v1/webhooks"):
        response = client.get(path, params={"after": "not-a-cursor"})
        assert response.status_code == 422 and response.json()["code"] == "invalid_cursor"
