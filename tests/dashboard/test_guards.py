"""The dashboard's guards (issue 19, items 7, 11, 12): IPv6 loopback serves, /api/autoselect
bodies are validated (422, never a 500), bodies are capped, writes from another site's page are
refused, no page may frame the dashboard; a batch job's set-aside particles are shown."""

from __future__ import annotations

import socket

import httpx
import pytest
from starlette.testclient import TestClient

from cryoclass.dashboard.app import create_app
from cryoclass.dashboard.guards import MAX_BODY_BYTES
from cryoclass.dashboard.service import Dashboard

from .test_cli_serve import _cli, _run_until, _stop


@pytest.fixture
def client(job) -> TestClient:
    return TestClient(
        create_app(Dashboard(job), allowed_hosts=["127.0.0.1", "localhost"]),
        base_url="http://127.0.0.1:8765",
        raise_server_exceptions=False,
    )


@pytest.mark.parametrize(
    "body",
    [
        {"min_count": 1e400},
        {"min_count": [1]},
        {"min_count": {"a": 1}},
        {"max_res_A": "x"},
        {"max_res_A": -3},
        {"min_count": 1.5},
        {"other": 1},
    ],
)
def test_autoselect_rejects_bad_bodies_with_422(client, body):
    import json

    raw = json.dumps(body).replace("1e+400", "1e400").replace("Infinity", "1e400")
    r = client.post("/api/autoselect", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert "error" in r.json()


def test_autoselect_still_takes_good_bodies(client):
    r = client.post("/api/autoselect", json={"min_count": 0, "max_res_A": None})
    assert r.status_code == 200 and r.json()["good"]


def test_bodies_are_capped_and_frames_refused(client):
    big = b"{" + b" " * (MAX_BODY_BYTES + 10) + b"}"
    r = client.post("/api/autoselect", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    r = client.get("/api/state")
    assert r.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_writes_from_another_origin_are_refused(client):
    evil = {"Origin": "http://evil.example"}
    r = client.post("/api/autoselect", json={"min_count": 0}, headers=evil)
    assert r.status_code == 403
    ours = {"Origin": "http://127.0.0.1:8765"}
    assert client.post("/api/autoselect", json={"min_count": 0}, headers=ours).status_code == 200


def test_batch_job_set_aside_is_shown(client, job):
    (job / "rejects.csv").write_text(
        "source,row,image_name,reason,time\n"
        "p.star,3,4@s.mrcs,image has NaN/Inf pixels,\n"
        "p.star,5,6@s.mrcs,image has NaN/Inf pixels,\n"
    )
    p = client.get("/api/state").json()["progress"]
    assert p["set_aside"] == 2 and p["set_aside_reasons"] == [["image has NaN/Inf pixels", 2]]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_serve_on_ipv6_loopback(job, tmp_path):
    proc, m = _run_until(
        _cli("serve", str(job), "--host", "::1", "--port", "0"),
        tmp_path / "log",
        r"(http://\[::1\]:\d+/)",
    )
    try:
        r = httpx.get(m.group(1) + "api/state", timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["classes"]["items"]
    finally:
        _stop(proc)
