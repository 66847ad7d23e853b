"""The ingestion ledger (pool), per-particle records and the event log."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from cryoclass.engine.particle_result import ParticleResult
from cryoclass.outputs.events import EventLog, read_events
from cryoclass.stream.pool import ARRIVAL, KEY, ParticlePool
from cryoclass.stream.records import ParticleRecords


def rows(stack: str, idx) -> pd.DataFrame:
    idx = np.asarray(idx)
    return pd.DataFrame(
        {
            "_stack_path": stack,
            "_stack_index": idx,
            "rlnImageName": [f"{i + 1:06d}@{stack}" for i in idx],
        }
    )


def test_pool_keys_each_particle_once():
    pool = ParticlePool(box=32, pixel_size_A=5.0)
    assert list(pool.add(rows("/a.mrcs", [0, 1, 2]), 10.0)) == [0, 1, 2]
    # repeats inside a table and across tables are taken once
    new = pool.add(pd.concat([rows("/a.mrcs", [2, 3, 3]), rows("/b.mrcs", [0])]), 11.0)
    assert list(new) == [3, 4]
    assert len(pool) == 5 and pool.table[KEY].is_unique
    assert list(pool.table[ARRIVAL]) == [10.0, 10.0, 10.0, 11.0, 11.0]
    pool.mark_rejected(np.array(["/c.mrcs@0"], dtype=object))
    assert list(pool.known(np.array(["/a.mrcs@3", "/c.mrcs@0", "/c.mrcs@1"], dtype=object))) == [
        True,
        True,
        False,
    ]
    back = ParticlePool.from_dict(pool.to_dict())
    assert len(back) == 5 and "/b.mrcs@0" in back and back.n_rejected == 1
    assert (back.box, back.pixel_size_A) == (32, 5.0)


def test_records_latest_result_and_pending():
    rec = ParticleRecords.empty(3)
    rec.grow(4)
    assert list(rec.pending) == [0, 1, 2, 3]
    res = ParticleResult(
        index=np.array([1, 3]),
        cls=np.array([2, 0]),
        psi_deg=np.zeros(2),
        tx=np.zeros(2),
        ty=np.zeros(2),
        max_prob=np.ones(2),
        n_significant=np.ones(2, int),
        log_likelihood=np.zeros(2),
        posterior=np.eye(3, dtype=np.float32)[[2, 0]],
    )
    rec.set(res, update=5, now_s=100.0)
    assert list(rec.pending) == [0, 2] and list(rec.processed) == [1, 3]
    assert list(rec.class_counts()) == [1, 0, 1]
    out = rec.result()
    assert list(out.index) == [1, 3] and list(out.cls) == [2, 0]
    assert list(rec.last_update[[1, 3]]) == [5, 5]

    rec.keep(np.array([True, False, True, True]))  # row 1 withdrawn: later rows move up
    assert len(rec) == 3 and list(rec.cls) == [-1, -1, 0] and list(rec.processed) == [2]
    assert list(rec.result().index) == [2] and list(rec.last_update) == [-1, -1, 5]
    back = ParticleRecords.from_dict(rec.to_dict())
    assert list(back.cls) == [-1, -1, 0] and back.latest.posterior.shape == (3, 3)


def test_event_log_cuts_partial_line_and_replays(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path).open()
    log.append({"seq": 0, "event": "online"})
    with open(path, "a") as fh:
        fh.write('{"seq": 1, "ev')  # killed mid-write
    log = EventLog(path).open()
    assert log.last_seq == 0
    assert log.replay([{"seq": 0, "event": "online"}, {"seq": 1, "event": "online"}]) == 1
    assert [e["seq"] for e in read_events(path)] == [0, 1]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_a_particle_listed_twice_is_ingested_once_and_reported(particles, config_for, tmp_path):
    from cryoclass.stream import Stream

    with Stream(config_for(0), tmp_path / "job", outputs_every_s=1e9) as s:
        n = s.add_particles(particles.subset(np.array([0, 1, 1, 2])), update=False)
        again = s.add_particles(particles.subset(np.array([2])), update=False)
    assert n == 3 and again == 0  # a later file repeating a particle: already ingested
    assert [r.reason for r in s.rejects] == ["listed twice: the same image as an earlier row"]
    assert s.rejects[0].image_name == particles.table["rlnImageName"].iloc[1]
