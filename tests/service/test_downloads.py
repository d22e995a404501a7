"""Downloads answer HEAD and a single Range (206), so a model download resumes; bad ranges are 416 problems
(issue 15). Over uvicorn for the resume, in process for the edge cases, and from S3 for a stream without seek."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from service.app import create_app
from service.dispatch import RecordingDispatcher
from service.downloads import iter_range
from service.settings import Settings
from service.storage import LocalStorage
from tests.service.conftest import free_port
from tests.service.live import end_live_jobs_fixture  # noqa: F401 (the end_live_jobs fixture)
from tests.service.test_model_api import _store_model

WEIGHTS = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable


@pytest.fixture
def model_url(client, spec_body, storage) -> str:
    job = client.post("/v1/jobs", json=spec_body()).json()
    _store_model(storage, job["id"], {"model.safetensors": WEIGHTS})
    return f"/v1/jobs/{job['id']}/model/files/model.safetensors"


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=10000-", 10000, 10239),
        ("bytes=-40", 10200, 10239),
        ("bytes=10230-99999", 10230, 10239),
    ],
)
def test_a_single_range_is_a_206_with_its_part(client, model_url, header, first, last):
    response = client.get(model_url, headers={"Range": header})
    assert response.status_code == 206
    assert response.content == WEIGHTS[first : last + 1]
    assert response.headers["content-range"] == f"bytes {first}-{last}/{len(WEIGHTS)}"
    assert response.headers["content-length"] == str(last - first + 1)


def test_head_gives_the_headers_without_the_body(client, model_url):
    response = client.head(model_url)
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-length"] == str(len(WEIGHTS)) and response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"] == f'"{hashlib.sha256(WEIGHTS).hexdigest()}"'
    assert client.head(model_url, headers={"Range": "bytes=5-"}).headers["content-range"] == "bytes 5-10239/10240"
    assert client.head(model_url.replace("model.safetensors", "nope.bin")).status_code == 404


@pytest.mark.parametrize(
    "header", ["bytes=10240-", "bytes=20-10", "bytes=-0", "bytes=abc", "items=0-1", "bytes=" + "9" * 30]
)
def test_an_unsatisfiable_or_unreadable_range_is_a_416_problem(client, model_url, header):
    response = client.get(model_url, headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "range_not_satisfiable"
    assert response.headers["content-range"] == f"bytes */{len(WEIGHTS)}"


def test_several_ranges_or_a_stale_if_range_get_the_whole_file(client, model_url):
    assert client.get(model_url, headers={"Range": "bytes=0-1,5-6"}).content == WEIGHTS
    stale = client.get(model_url, headers={"Range": "bytes=5-", "If-Range": '"0000"'})
    assert stale.status_code == 200 and stale.content == WEIGHTS
    etag = client.head(model_url).headers["etag"]
    fresh = client.get(model_url, headers={"Range": "bytes=5-", "If-Range": etag})
    assert fresh.status_code == 206 and fresh.content == WEIGHTS[5:]


def test_report_files_take_ranges_too(client, spec_body, storage):
    job_id = client.post("/v1/jobs", json=spec_body()).json()["id"]
    storage.put_stream(f"jobs/{job_id}/artifacts/report.md", [b"# Report\nall good\n"])
    response = client.get(f"/v1/jobs/{job_id}/report/files/report.md", headers={"Range": "bytes=2-7"})
    assert response.status_code == 206 and response.content == b"Report"
    assert response.headers["content-security-policy"] == "sandbox"


def test_a_range_of_an_s3_object_skips_what_comes_before(s3_storage):
    s3_storage.put_stream("big.bin", [WEIGHTS])
    assert b"".join(iter_range(s3_storage, "big.bin", 3000, 100)) == WEIGHTS[3000:3100]
    assert b"".join(iter_range(s3_storage, "big.bin", 10200, 1000)) == WEIGHTS[10200:]


# --- on the wire -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(live_sessions, tmp_path_factory) -> Iterator[tuple[str, LocalStorage]]:
    tmp = tmp_path_factory.mktemp("downloads")
    storage = LocalStorage(tmp / "storage")
    settings = Settings(data_dir=tmp, rate_limit_per_s=10_000, rate_limit_burst=10_000)
    app = create_app(settings, sessions=live_sessions, storage=storage, dispatcher=RecordingDispatcher())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{server.config.port}", storage
    server.should_exit = True
    thread.join(timeout=5)


def test_an_interrupted_model_download_resumes_where_it_stopped(server, live_key, spec_body, end_live_jobs):
    base, storage = server
    headers = {"Authorization": f"Bearer {live_key}"}
    with httpx.Client(base_url=base, headers=headers) as http:
        job_id = http.post("/v1/jobs", json=spec_body("resume", resources={"queue": "downloads"})).json()["id"]
        end_live_jobs.append(job_id)
        _store_model(storage, job_id, {"model.safetensors": WEIGHTS})
        url = f"/v1/jobs/{job_id}/model/files/model.safetensors"
        with http.stream("GET", url) as response:  # the connection drops after the first bytes
            received = next(response.iter_raw(1000))
            etag = response.headers["etag"]
        rest = http.get(url, headers={"Range": f"bytes={len(received)}-", "If-Range": etag})
    assert rest.status_code == 206
    assert received + rest.content == WEIGHTS
