"""The API key lifecycle: `lingudistill keys list|revoke` and the admin routes under /v1/keys."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update

from service.app import create_app
from service.cli import keys
from service.db import make_engine, make_sessionmaker, session_scope
from service.models import ApiKey, Tenant
from service.settings import get_settings
from tests.service.test_errors import assert_problem

pytestmark = pytest.mark.parametrize("backend", ["postgres", "sqlite"], indirect=True)


# --- the CLI ----------------------------------------------------------------------------------------------------


@dataclass
class CliWorld:
    """`lingudistill keys ...` on a committed database (the CLI opens its own connections) and an API on it."""

    url: str
    tenant: str
    make_api: Callable[[str], TestClient]

    def __call__(self, *args: str) -> Result:
        return CliRunner().invoke(keys, list(args))

    def create(self, *, admin: bool = False) -> tuple[str, str]:
        """A new key for the test's tenant: (plain key, shown prefix)."""
        result = self("create", "--tenant", self.tenant, *(["--admin"] if admin else []))
        assert result.exit_code == 0, result.output
        key = result.output.strip().splitlines()[-1]
        return key, f"{key[:12]}…"


@pytest.fixture
def cli(backend, request, tmp_path, monkeypatch, settings, storage, dispatcher) -> Iterator[CliWorld]:
    tenant = f"cli-{secrets.token_hex(4)}"
    if backend == "postgres":  # the session's database: committed rows, removed (by tenant) afterwards
        url = request.getfixturevalue("pg_url")
    else:
        path = tmp_path / "cli.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
    monkeypatch.setenv("LINGUDISTILL_DATABASE_URL", url)
    get_settings.cache_clear()
    engine = make_engine(url)
    app = create_app(settings, sessions=make_sessionmaker(engine), storage=storage, dispatcher=dispatcher)
    clients: list[TestClient] = []

    def make_api(key: str) -> TestClient:
        client = TestClient(app, headers={"Authorization": f"Bearer {key}"})
        clients.append(client)
        return client

    yield CliWorld(url, tenant, make_api)
    for client in clients:
        client.close()
    with session_scope(make_sessionmaker(engine)) as session:
        session.execute(delete(ApiKey).where(ApiKey.tenant_id.in_(select(Tenant.id).where(Tenant.name == tenant))))
        session.execute(delete(Tenant).where(Tenant.name == tenant))
    engine.dispose()
    get_settings.cache_clear()


def test_cli_lists_keys_and_a_revoked_key_is_refused_with_401(cli):
    admin_key, admin_prefix = cli.create(admin=True)
    user_key, user_prefix = cli.create()
    user = cli.make_api(user_key)
    assert user.get("/v1/jobs").status_code == 200

    listed = cli("list", "--tenant", cli.tenant)
    assert listed.exit_code == 0, listed.output
    header, *lines = listed.output.strip().splitlines()
    assert header.split()[:4] == ["ID", "PREFIX", "TENANT", "ADMIN"]
    assert len(lines) == 2
    by_prefix = {line.split()[1]: line.split() for line in lines}
    assert by_prefix[admin_prefix][2:4] == [cli.tenant, "yes"]
    assert by_prefix[user_prefix][2:4] == [cli.tenant, "no"]
    assert by_prefix[user_prefix][-1] == "-"  # not revoked
    assert user_key not in listed.output and admin_key not in listed.output

    revoked = cli("revoke", user_prefix)  # pasted from the list, ellipsis and all
    assert revoked.exit_code == 0, revoked.output
    user_id = by_prefix[user_prefix][0]
    assert f"key {user_id}" in revoked.output and "revoked" in revoked.output

    problem = assert_problem(user.get("/v1/jobs"), 401, "unauthorized")
    assert problem["detail"] == "unknown or revoked API key"
    assert cli.make_api(admin_key).get("/v1/jobs").status_code == 200  # only that key

    active = cli("list", "--tenant", cli.tenant).output
    assert user_prefix not in active and admin_prefix in active
    everything = cli("list", "--tenant", cli.tenant, "--all").output
    revoked_line = next(line for line in everything.splitlines() if user_prefix in line)
    assert revoked_line.split()[-1] != "-"  # a revoked_at time

    again = cli("revoke", user_id)
    assert again.exit_code == 0, again.output
    assert "already revoked" in again.output


def test_cli_revoke_refuses_unknown_and_ambiguous_references(cli):
    unknown = cli("revoke", "ldk_nosuchkey")
    assert unknown.exit_code == 2
    assert "no API key with id or prefix 'ldk_nosuchkey'" in unknown.output

    first_key, first_prefix = cli.create()
    second_key, _ = cli.create()
    engine = make_engine(cli.url)
    with session_scope(make_sessionmaker(engine)) as session:  # a collision of the 12 shown characters
        session.execute(update(ApiKey).where(ApiKey.prefix == second_key[:12]).values(prefix=first_key[:12]))
    engine.dispose()

    ambiguous = cli("revoke", first_prefix)
    assert ambiguous.exit_code == 2
    assert "matches more than one key" in ambiguous.output and "give the key id" in ambiguous.output
    for key in (first_key, second_key):  # neither was revoked
        assert cli.make_api(key).get("/v1/jobs").status_code == 200
    assert len(cli("list", "--tenant", cli.tenant).output.strip().splitlines()) == 3  # header and both keys


# --- the admin routes -------------------------------------------------------------------------------------------


@pytest.fixture
def admin(make_client, new_key) -> TestClient:
    return make_client(new_key("ops", admin=True))


def test_key_routes_refuse_a_tenant_key_with_403(client, admin):
    target = admin.post("/v1/keys", json={"tenant": "acme"}).json()
    assert_problem(client.get("/v1/keys"), 403, "forbidden")
    assert_problem(client.post("/v1/keys", json={"tenant": "acme", "admin": True}), 403, "forbidden")
    assert_problem(client.post(f"/v1/keys/{target['id']}/revoke"), 403, "forbidden")
    acme = admin.get("/v1/keys", params={"tenant": "acme", "include_revoked": True}).json()["items"]
    assert len(acme) == 2  # the client's key and the target: no admin key was made
    assert all(k["revoked_at"] is None and not k["admin"] for k in acme)


def test_list_shows_keys_without_their_secret(admin, new_key, sessions):
    plain = new_key("acme")
    other = new_key("globex")
    response = admin.get("/v1/keys", params={"tenant": "acme"})
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [item["prefix"] for item in items] == [plain[:12]]
    assert set(items[0]) == {"id", "prefix", "tenant_id", "tenant", "admin", "created_at", "revoked_at"}
    assert items[0]["tenant"] == "acme" and items[0]["admin"] is False
    with sessions() as session:
        key_hash = session.scalar(select(ApiKey.key_hash).where(ApiKey.id == items[0]["id"]))
    everything = admin.get("/v1/keys").text
    assert plain not in everything and key_hash not in everything
    assert other[:12] in everything  # an admin sees every tenant's keys


def test_create_returns_a_key_shown_once_that_works(admin, make_client):
    response = admin.post("/v1/keys", json={"tenant": "newco"})
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["key"].startswith("ldk_") and created["prefix"] == created["key"][:12]
    assert created["tenant"] == "newco" and created["admin"] is False and created["revoked_at"] is None

    tenant_client = make_client(created["key"])
    job_list = tenant_client.get("/v1/jobs")
    assert job_list.status_code == 200 and job_list.json()["items"] == []
    assert_problem(tenant_client.get("/v1/keys"), 403, "forbidden")  # not an admin key
    listed = admin.get("/v1/keys", params={"tenant": "newco"}).json()["items"]
    assert [(k["id"], k["tenant_id"]) for k in listed] == [(created["id"], created["tenant_id"])]
    assert "key" not in listed[0]

    ops = admin.post("/v1/keys", json={"tenant": "newco", "admin": True}).json()
    assert ops["tenant_id"] == created["tenant_id"]  # the same tenant, not a second one
    assert make_client(ops["key"]).get("/v1/keys").status_code == 200
    problem = assert_problem(admin.post("/v1/keys", json={"tenant": ""}), 422, "validation_error")
    assert problem["errors"][0]["loc"] == ["body", "tenant"]


def test_a_revoked_key_is_refused_on_its_next_request(admin, make_client):
    created = admin.post("/v1/keys", json={"tenant": "acme"}).json()
    victim = make_client(created["key"])
    assert victim.get("/v1/jobs").status_code == 200

    response = admin.post(f"/v1/keys/{created['id']}/revoke")
    assert response.status_code == 200, response.text
    revoked = response.json()
    assert revoked["id"] == created["id"] and revoked["revoked_at"] is not None
    problem = assert_problem(victim.get("/v1/jobs"), 401, "unauthorized")
    assert problem["detail"] == "unknown or revoked API key"

    again = admin.post(f"/v1/keys/{created['id']}/revoke")  # idempotent: the first revocation time stays
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked["revoked_at"]
    assert admin.get("/v1/keys", params={"tenant": "acme"}).json()["items"] == []
    with_revoked = admin.get("/v1/keys", params={"tenant": "acme", "include_revoked": True}).json()["items"]
    assert [k["id"] for k in with_revoked] == [created["id"]]


def test_revoking_an_unknown_key_is_a_404_problem(admin):
    problem = assert_problem(admin.post("/v1/keys/key_missing/revoke"), 404, "key_not_found")
    assert "key_missing" in problem["detail"]


def test_an_admin_cannot_revoke_the_key_it_calls_with(make_client, new_key):
    plain = new_key("ops", admin=True)
    admin = make_client(plain)
    own = next(k for k in admin.get("/v1/keys", params={"tenant": "ops"}).json()["items"] if k["prefix"] == plain[:12])
    problem = assert_problem(admin.post(f"/v1/keys/{own['id']}/revoke"), 409, "cannot_revoke_own_key")
    assert "authenticated with that key" in problem["detail"]
    assert admin.get("/v1/keys").status_code == 200  # still locked in, not out

    other_admin = make_client(new_key("ops", admin=True))  # another admin key may revoke it
    assert other_admin.post(f"/v1/keys/{own['id']}/revoke").status_code == 200
    assert_problem(admin.get("/v1/keys"), 401, "unauthorized")


def test_list_pages_newest_first(admin):
    ids = [admin.post("/v1/keys", json={"tenant": "paged"}).json()["id"] for _ in range(3)]
    first = admin.get("/v1/keys", params={"tenant": "paged", "limit": 2}).json()
    assert [k["id"] for k in first["items"]] == ids[::-1][:2] and first["next_cursor"]
    rest = admin.get("/v1/keys", params={"tenant": "paged", "limit": 2, "after": first["next_cursor"]}).json()
    assert [k["id"] for k in rest["items"]] == [ids[0]] and rest["next_cursor"] is None
