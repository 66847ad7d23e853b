"""The dashboard's HTTP API without a browser: state, images, downloads (and nothing else),
tokens, host check, selection and export, the server-sent event stream."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from starlette.testclient import TestClient

from cryoclass.dashboard.app import COOKIE, _version_events, create_app
from cryoclass.dashboard.launch import is_loopback, make_server
from cryoclass.dashboard.marks import Marks
from cryoclass.dashboard.service import Dashboard
from cryoclass.io import read_star
from cryoclass.outputs.selection import JobClasses, read_job_classes

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def client(job):
    return TestClient(create_app(Dashboard(job)))


def test_state_shows_the_classes_sorted_by_count(client, job):
    s = client.get("/api/state").json()
    c = read_job_classes(job, images=False)
    items = s["classes"]["items"]
    assert [it["count"] for it in items] == c.counts.tolist()
    assert [it["number"] for it in items] == [1, 2, 3]
    np.testing.assert_allclose([it["res_A"] for it in items], c.resolution_A, rtol=1e-6)
    assert s["kind"] == "batch" and s["progress"]["classified"] == int(c.counts.sum())
    assert s["progress"]["finished"] and s["params"]["n_classes"] == 3
    assert len(s["history"]["mean_loglik"]) == 5  # 4 online-EM + 1 full iteration
    # no full pass before the job's only one: nothing to count changes against
    assert s["history"]["class_changes"] == [None] * 5
    png = client.get(items[0]["image"])
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get(f"/api/class/{s['classes']['key']}/4.png").status_code == 404
    assert client.get("/").status_code == 200 and b"cryoclass" in client.get("/").content
    assert client.get("/static/app.js").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/files/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/files/%2Fetc%2Fpasswd",
        "/api/files/..",
        "/api/files/checkpoint.pt",  # in the folder, but not an output to serve
        "/api/files/.classify.lock",
        "/static/..%2Fservice.py",
        "/static/../../config.json",
        "/api/files/../../../etc/passwd",
        "/etc/passwd",
    ],
)
def test_only_the_jobs_outputs_are_served(client, path):
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code)
    assert b"root:" not in r.content


def test_outputs_download(client, job):
    r = client.get("/api/files/particles.star")
    assert r.status_code == 200 and r.content == (job / "particles.star").read_bytes()


def test_token_required_when_set(job):
    c = TestClient(create_app(Dashboard(job), token="s3cret"))
    assert c.get("/api/state").status_code == 401
    assert c.get("/api/state?token=wrong").status_code == 401
    assert c.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/state", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    r = c.get("/?token=s3cret")  # the printed URL: sets the cookie
    assert r.status_code == 200 and COOKIE in r.headers["set-cookie"]
    assert "httponly" in r.headers["set-cookie"].lower()
    assert c.get("/api/state").status_code == 200  # the page's own requests, by cookie
    c.cookies.clear()
    assert c.post("/api/clear", json={}).status_code == 401


def test_non_loopback_address_gets_a_token_and_loopback_a_host_check(job):
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    srv = make_server(job, host="0.0.0.0", port=0)
    try:
        assert srv.token and f"?token={srv.token}" in srv.url
    finally:
        srv.sock.close()
    srv = make_server(job, host="127.0.0.1", port=0, token=None)
    try:
        assert srv.token is None and srv.url.startswith("http://127.0.0.1:")
    finally:
        srv.sock.close()
    c = TestClient(
        create_app(Dashboard(job), allowed_hosts=["127.0.0.1", "localhost"]),
        base_url="http://evil.example",
    )
    assert c.get("/api/state").status_code == 400  # DNS rebinding: foreign Host refused


def test_selection_and_export_equal_the_expected_subset(client, job):
    assert (
        client.post(
            "/api/mark",
            content="number=1&mark=good",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ).status_code
        == 415
    )
    assert client.post("/api/mark", json={"number": 9, "mark": "good"}).status_code == 400
    assert client.post("/api/mark", json={"number": 1, "mark": "great"}).status_code == 400
    for n, m in ((1, "good"), (3, "good"), (2, "bad")):
        assert client.post("/api/mark", json={"number": n, "mark": m}).status_code == 200
    sel = client.get("/api/state").json()["selection"]
    counts = read_job_classes(job, images=False).counts
    assert sel["good"] == [1, 3] and sel["bad"] == [2]
    assert sel["n_good_particles"] == int(counts[0] + counts[2])
    r = client.post("/api/export", json={})
    assert r.status_code == 200, r.text
    assert r.json()["n_particles"] == int(counts[0] + counts[2])
    allp = read_star(job / "particles.star").particles
    got = read_star(job / "selected_particles.star").particles
    want = allp.loc[allp["rlnClassNumber"].isin([1, 3])]
    assert got["rlnImageName"].tolist() == want["rlnImageName"].tolist()
    assert client.get("/api/files/selected_particles.cs").status_code == 200
    # the marks were saved: a new server on the same folder shows them
    s2 = TestClient(create_app(Dashboard(job))).get("/api/state").json()
    assert s2["selection"]["good"] == [1, 3] and s2["selection"]["bad"] == [2]


def test_autoselect_and_clear(client, job):
    counts = read_job_classes(job, images=False).counts
    r = client.post("/api/autoselect", json={"min_count": int(counts[1]), "max_res_A": None})
    assert r.json()["good"] == [1, 2]
    marks = {it["number"]: it["mark"] for it in client.get("/api/state").json()["classes"]["items"]}
    assert marks == {1: "good", 2: "good", 3: "bad"}
    client.post("/api/clear", json={})
    assert client.get("/api/state").json()["selection"]["good"] == []
    assert client.post("/api/export", json={}).status_code == 400  # nothing marked good


def test_marks_follow_renumbered_classes(job):
    c = read_job_classes(job)
    m = Marks(job)
    m.follow(c)
    m.set(1, "good")
    m.set(3, "bad")
    perm = np.array([1, 2, 0])  # next update: new class i+1 is old perm[i]+1
    m.follow(
        JobClasses(
            counts=c.counts[perm],
            resolution_A=c.resolution_A[perm],
            images=c.images[perm],
            pixel_size_A=c.pixel_size_A,
        )
    )
    assert m.numbers("good") == [3] and m.numbers("bad") == [2]


def test_event_stream_announces_changes(job):
    d = Dashboard(job)

    class FakeRequest:
        def __init__(self, n):
            self.n = n

        async def is_disconnected(self):
            self.n -= 1
            return self.n < 0

    async def collect(n):
        return [m async for m in _version_events(FakeRequest(n), d)]

    import cryoclass.dashboard.app as appmod

    appmod.POLL_S, before = 0.01, appmod.POLL_S
    try:
        msgs = asyncio.run(collect(3))
        assert sum(m.startswith("event: version") for m in msgs) == 1  # nothing changed
        d.marks.follow(read_job_classes(job))
        d.set_mark(1, "good")  # something changed
        msgs = asyncio.run(collect(2))
        assert f'data: "{d.version()}"' in "".join(msgs)
    finally:
        appmod.POLL_S = before


def test_batch_progress_counts_the_steps_the_schedule_runs(finished_job, tmp_path):
    """The dashboard's step total of a batch job is the schedule's (online-EM iterations + final
    passes, here 2 + 2), read from the events the job writes in the stream's format."""
    from cryoclass.jobs.classify import classify
    from cryoclass.outputs.events import read_events
    from cryoclass.schedules.batch import batch_steps

    from .conftest import small_config

    cfg = small_config(n_online_em_iters=2, n_full_iters=2)
    classify(finished_job.parent / "data" / "particles.star", cfg, tmp_path / "job")
    events = read_events(tmp_path / "job" / "events.jsonl")
    assert [e["update"] for e in events] == [1, 2, 3, 4, 4] and events[-1]["event"] == "finish"
    assert {e["steps"] for e in events} == {batch_steps(cfg)} == {4}
    s = TestClient(create_app(Dashboard(tmp_path / "job"))).get("/api/state").json()
    p = s["progress"]
    assert s["kind"] == "batch" and p["finished"] and (p["step"], p["total_steps"]) == (4, 4)
    assert s["history"]["x"] == [1, 2, 3, 4] and s["history"]["x_label"] == "iteration"
    # the second full pass counts the particles that changed class since the first
    changed = events[3]["class_changes"]
    assert 0.0 <= changed <= 1.0 and events[2]["class_changes"] is None
    assert s["history"]["class_changes"] == [None, None, None, pytest.approx(changed)]
    assert len(s["distribution"]["t"]) == 5 and len(s["distribution"]["series"]) == 3


def test_kind_before_the_first_event_is_the_locking_jobs(tmp_path):
    """A stream still waiting for particles has no event yet: its folder lock names it."""
    import os

    from cryoclass.io.lock import lock_folder

    for job, kind in (("stream", "stream"), ("classify", "batch")):
        out = tmp_path / job
        out.mkdir()
        os.close(lock_folder(out, job))
        s = TestClient(create_app(Dashboard(out))).get("/api/state").json()
        assert s["kind"] == kind and s["classes"]["items"] == []
