"""No parameter is accepted and ignored: every field of Config changes what a job writes, or is
an execution setting that must leave the result as it is (and the README says so).

Each field is changed on its own on a small simulated set, and the job's outputs (class images,
particles.star, rejects.csv) are compared with the defaults' outputs. A field added to Config
without an entry here fails ``test_every_field_is_covered``.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch

from cryoclass.config import Config
from cryoclass.io.particles import read_particles
from cryoclass.jobs.classify import classify
from cryoclass.simulate.dataset import simulate_dataset
from cryoclass.stream import Stream

BOX, APIX = 32, 5.0
BASE = dict(
    n_classes=3,
    max_res_A=12.5,
    batch_size_per_class=20,
    n_online_em_iters=4,
    n_full_iters=1,
    sigma_anneal_start=1,
    sigma_anneal_iters=2,
    device="cpu",
)

#: field -> (changed value, other settings the comparison needs). A batch job's outputs differ.
BATCH = {
    "n_classes": (4, {}),
    "max_res_A": (20.0, {}),
    "min_res_A": (60.0, {}),
    "init_res_A": (15.0, {}),
    "init_lowpass_A": (60.0, {}),
    "n_online_em_iters": (2, {}),
    "batch_size_per_class": (30, {}),
    "n_full_iters": (2, {}),
    "n_restarts": (3, {}),
    "initial_uncertainty_factor": (8.0, {}),
    # on this small, clean set the first temperatures are 1 at the default uncertainty (T >= 1)
    "sigma_anneal_start": (0, {"initial_uncertainty_factor": 50.0}),
    "sigma_anneal_iters": (4, {"initial_uncertainty_factor": 50.0}),
    "tau2_fudge": (8.0, {}),
    "psi_step_deg": (15.0, {}),
    "max_shift_px": (2.0, {}),
    "shift_step_px": (2.0, {}),
    "exhaustive_search": (True, {}),
    "coarse_precision": ("bfloat16", {"coarse_precision": "float32"}),
    # the default, full_passes, acts from the second full pass on
    "class_prior": ("off", {"n_full_iters": 3}),
    "nonnegative_references": (False, {}),
    "force_max": (False, {}),
    # the default, marginal, acts from the second full pass on
    "class_score": ("best_pose", {"n_full_iters": 3}),
    "white_noise": (True, {}),
    "noise_group_width_um": (0.0, {}),
    "skip_ctf": (True, {}),
    "invert_contrast": (True, {}),
    "mask_diameter_A": (100.0, {}),
    "mask_diameter_outer_A": (150.0, {"mask_diameter_A": 100.0}),
    "recenter": (False, {}),
    "recenter_threshold": (0.6, {}),
    "reseed_empty": (False, {"n_classes": 8}),
    "merge_duplicates": (False, {"n_classes": 8, "n_full_iters": 3}),
    "hard_classify_last_iter": (True, {}),
    "sort_classes": (False, {"n_classes": 6}),
    "remove_duplicates": (False, {"min_separation_A": 3000.0}),
    "min_separation_A": (3000.0, {}),
    "seed": (1, {}),
}
#: streaming schedule only: a stream's classes differ (batch jobs do not read them; the
#: README and the fields' descriptions say so).
STREAM = {"stream_policy": ("live", {}), "stream_revisit": (0.0, {})}
#: where and in what pieces the work runs: the result must not change.
EXECUTION = {"device": "auto", "batch_particles": 40}


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def star(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fields_data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        simulate_dataset(
            out,
            n_particles=240,
            box=BOX,
            pixel_size_A=APIX,
            n_views=3,
            snr=0.5,
            particles_per_micrograph=40,
            seed=2,
        )
    return out / "particles.star"


def _digest(out: Path) -> dict[str, str]:
    """Hashes of what the job wrote that a user reads."""
    with mrcfile.open(out / "classes.mrcs", permissive=True) as m:
        classes = np.asarray(m.data, dtype=np.float32)
    return {
        "classes": hashlib.sha256(np.round(classes, 4).tobytes()).hexdigest(),
        "particles": hashlib.sha256((out / "particles.star").read_bytes()).hexdigest(),
        "rejects": hashlib.sha256((out / "rejects.csv").read_bytes()).hexdigest(),
    }


def _batch(star: Path, out: Path, **settings) -> dict[str, str]:
    classify(star, Config(**{**BASE, **settings}), out)
    return _digest(out)


def _stream(star: Path, out: Path, **settings) -> np.ndarray:
    pset = read_particles(star)
    cfg = Config(**{**BASE, "n_online_em_iters": 2, **settings})
    with Stream(cfg, out, outputs_every_s=1e9) as s:
        for a in range(0, len(pset), 40):
            s.add_particles(pset.subset(np.arange(a, min(len(pset), a + 40))))
        res = s.finish()
    return np.asarray(res.particles.cls)


def test_execution_fields_are_the_resumable_ones():
    from cryoclass.config import EXECUTION_FIELDS

    assert set(EXECUTION) == EXECUTION_FIELDS


def test_settings_saved_by_earlier_versions_still_load():
    # checkpoints and config.json written before class_prior existed hold use_class_prior
    assert Config(use_class_prior=True).class_prior == "always"
    assert Config(use_class_prior=False).class_prior == "off"
    saved = Config(n_classes=4, class_prior="off").model_dump()
    saved.pop("class_prior")
    loaded = Config(**saved, use_class_prior=False)
    assert loaded.changes_from(Config(n_classes=4, class_prior="off")) == []


def test_every_field_is_covered():
    covered = set(BATCH) | set(STREAM) | set(EXECUTION)
    assert set(Config.model_fields) == covered, (
        "a Config field must change what a job does (BATCH, STREAM) or be an execution "
        f"setting (EXECUTION): missing {set(Config.model_fields) - covered}, "
        f"unknown {covered - set(Config.model_fields)}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("field", sorted(BATCH))
def test_batch_field_changes_the_outputs(field, star, tmp_path):
    value, extra = BATCH[field]
    assert getattr(Config(**{**BASE, **extra}), field) != value
    before = _batch(star, tmp_path / "base", **extra)
    after = _batch(star, tmp_path / "changed", **{**extra, field: value})
    assert before != after, f"{field} = {value!r} changed nothing the job writes"


@pytest.mark.slow
@pytest.mark.parametrize("field", sorted(STREAM))
def test_stream_field_changes_the_stream(field, star, tmp_path):
    value, extra = STREAM[field]
    before = _stream(star, tmp_path / "base", **extra)
    after = _stream(star, tmp_path / "changed", **{**extra, field: value})
    assert not np.array_equal(before, after), f"{field} = {value!r} changed nothing"


@pytest.mark.slow
@pytest.mark.parametrize("field", sorted(EXECUTION))
def test_execution_field_keeps_the_result(field, star, tmp_path):
    before = _batch(star, tmp_path / "base")
    after = _batch(star, tmp_path / "changed", **{field: EXECUTION[field]})
    assert before["particles"] == after["particles"] or _same_classes(
        tmp_path / "base", tmp_path / "changed"
    )
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert f"`{field}`" in readme, f"the README must say what {field} does"


def _same_classes(a: Path, b: Path) -> bool:
    """Two jobs' assignments agree for 99 % of the particles (float summation order aside)."""
    import starfile

    ca = starfile.read(a / "particles.star")["particles"]["rlnClassNumber"].to_numpy()
    cb = starfile.read(b / "particles.star")["particles"]["rlnClassNumber"].to_numpy()
    return bool(np.mean(ca == cb) >= 0.99)
