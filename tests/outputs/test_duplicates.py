"""Duplicate picks: exactly the injected ones are flagged, the higher-posterior copy is kept."""

import numpy as np
import pandas as pd

from cryoclass.outputs.duplicates import duplicate_rejects, find_duplicates


def test_injected_duplicates_are_flagged_and_best_copy_kept():
    rng = np.random.default_rng(0)
    n = 200
    mic = rng.integers(0, 5, n)
    # picks on a 150 Å lattice per micrograph, so originals are never within 20 Å of each other
    slot = np.array([np.sum(mic[:i] == mic[i]) for i in range(n)])
    x, y = (slot % 20) * 150.0, (slot // 20) * 150.0
    table = pd.DataFrame(
        {
            "rlnMicrographName": [f"mic{m}.mrc" for m in mic],
            "rlnCoordinateX": x,
            "rlnCoordinateY": y,
            "rlnImageName": [f"{i + 1}@p.mrcs" for i in range(n)],
        }
    )
    score = rng.uniform(0, 1, n)
    src = rng.choice(n, 15, replace=False)
    dup = table.iloc[src].copy()
    dup["rlnCoordinateX"] += rng.uniform(-5, 5, 15)  # a few Å apart (pixel size 1 Å)
    dup["rlnImageName"] = [f"{i + 1}@dup.mrcs" for i in range(15)]
    table = pd.concat([table, dup], ignore_index=True)
    score = np.concatenate([score, rng.uniform(0, 1, 15)])
    drop, reasons = find_duplicates(table, score, 20.0, 1.0)
    assert drop.size == 15
    for a, b in zip(src, range(n, n + 15)):
        loser = b if score[b] < score[a] else a
        assert loser in drop and ({a, b} - {loser}).isdisjoint(drop)
    rej = duplicate_rejects(table, drop, reasons, "p.star")
    assert all("duplicate pick" in r.reason for r in rej)


def test_no_coordinates_no_duplicates():
    table = pd.DataFrame({"rlnImageName": ["1@a.mrcs", "2@a.mrcs"]})
    drop, _ = find_duplicates(table, np.ones(2), 20.0, 1.0)
    assert drop.size == 0


def test_without_duplicate_picks_drops_the_lower_posterior_copy():
    """The one function batch and streaming set duplicate picks aside with."""
    from cryoclass.engine.particle_result import ParticleResult
    from cryoclass.outputs.duplicates import without_duplicate_picks

    rows = pd.DataFrame(
        {
            "rlnMicrographName": ["m.mrc"] * 3,
            "rlnCoordinateX": [0.0, 3.0, 500.0],
            "rlnCoordinateY": [0.0, 0.0, 0.0],
            "rlnImageName": ["1@a.mrcs", "2@a.mrcs", "3@a.mrcs"],
        },
        index=[7, 8, 9],
    )
    res = ParticleResult.unprocessed(3, 2, first_row=7)
    res.max_prob = np.array([0.4, 0.9, 0.5])
    kept, rejects = without_duplicate_picks(rows, res, 20.0, "p.star")
    assert list(kept.index) == [8, 9]
    assert [r.image_name for r in rejects] == ["1@a.mrcs"] and rejects[0].source == "p.star"
