"""The two schedules' bookkeeping: what each update processes, and what it costs."""

from __future__ import annotations

import numpy as np

from cryoclass.stream import Stream, read_events


def events_of(out):
    return [e for e in read_events(out / "events.jsonl") if e["event"] != "ingest"]


def test_online_cost_follows_new_particles(particles, config_for, tmp_path):
    """Each online update E-steps the new chunk plus at most stream_revisit x as many older
    particles (none once the online-EM phase is over); warm-up restarts from all particles
    until one minibatch has arrived; every particle is classified on arrival."""
    cfg = config_for(0, n_online_em_iters=4, n_full_iters=1)
    mb = cfg.minibatch_size
    with Stream(cfg, tmp_path, outputs_every_s=1e9) as s:
        for a in range(0, 480, 30):
            s.add_particles(particles.subset(np.arange(a, a + 30)))
            assert s.n_processed == s.n_ingested  # classified as soon as they arrive
        s.finish()
    ev = events_of(tmp_path)
    warm = [e for e in ev if e["event"] == "warmup"]
    online = [e for e in ev if e["event"] == "online"]
    assert all(e["n_new"] + e["n_revisited"] <= mb for e in warm)
    assert all(e["n_revisited"] <= e["n_new"] for e in online)
    late = [e for e in online if e["update"] > online[0]["update"] + 8]
    assert late and all(e["n_revisited"] == 0 for e in late)
    assert [e["event"] for e in ev[-2:]] == ["final", "finish"]
    assert ev[-2]["n_revisited"] == 480
    assert all(e["latency_s"]["max"] < 60 for e in warm + online)


def test_online_splits_large_arrivals_into_minibatches(particles, config_for, tmp_path):
    cfg = config_for(0)
    with Stream(cfg, tmp_path, outputs_every_s=1e9) as s:
        s.add_particles(particles.subset(np.arange(400)))
    ev = events_of(tmp_path)
    assert all(e["n_new"] <= cfg.minibatch_size for e in ev)
    assert sum(e["n_new"] for e in ev) == 400


def test_live_waits_then_full_passes(particles, config_for, tmp_path):
    """Live: a normal 2D run once batch_size_per_class x K x n_online_em_iters (160) particles
    arrived, then a full iteration over all every batch_size_per_class x K x 2 (160) new."""
    cfg = config_for(
        0, stream_policy="live", n_online_em_iters=2, sigma_anneal_iters=2, n_full_iters=1
    )
    with Stream(cfg, tmp_path, outputs_every_s=1e9) as s:
        for a in range(0, 440, 40):
            s.add_particles(particles.subset(np.arange(a, a + 40)))
            if s.n_ingested < 160:
                assert s.state is None and s.n_processed == 0
        s.finish()
    ev = events_of(tmp_path)
    kinds = [
        (e["event"], e["n_ingested"], e["n_new"] + e["n_revisited"])
        for e in ev
        if e["event"] != "finish"
    ]
    assert kinds == [("init", 160, 160), ("full", 320, 320), ("final", 440, 440)]


def test_short_stream_completes_the_online_phase(particles, config_for, tmp_path):
    """A stream shorter than the batch job's online-EM phase (10 x 80 particles processed) gets
    the rest of that phase at the end, as batch runs it, before the final full passes."""
    cfg = config_for(0, n_full_iters=1)
    with Stream(cfg, tmp_path, outputs_every_s=1e9) as s:
        s.add_particles(particles.subset(np.arange(120)))
        before = s.state.processed
        s.finish()
    ev = events_of(tmp_path)
    complete = [e for e in ev if e["event"] == "complete"]
    assert before < 800
    assert len(complete) == int(np.ceil((800 - before) / 80))
    assert all(e["n_new"] == 0 and e["n_revisited"] == 80 for e in complete)
    assert [e["event"] for e in ev[-2:]] == ["final", "finish"]
