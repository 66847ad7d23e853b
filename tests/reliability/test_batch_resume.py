"""Batch ``--resume``: a job stopped at any step and resumed gives exactly the result of the job
that was never stopped (same classes, same assignments of every particle, none lost or counted
twice); a folder holding an interrupted run is not overwritten by mistake."""

from __future__ import annotations

import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from cryoclass.config import Config
from cryoclass.io import InputError
from cryoclass.jobs import classify as classify_module
from cryoclass.jobs.classify import classify
from cryoclass.outputs.checkpoint import CHECKPOINT_NAME, JobCheckpoint
from cryoclass.outputs.events import EVENTS_NAME, read_events
from cryoclass.schedules.batch import batch_steps
from cryoclass.simulate import simulate_dataset

from .projects import run_cli

N = 300


class Crash(Exception):
    """Stands for the process dying."""


def job_config(**overrides) -> Config:
    """K = 4, 6 online-EM iterations of 80 particles, 2 full passes: 8 steps, about 1 s."""
    base = dict(
        n_classes=4,
        max_res_A=12.5,
        batch_size_per_class=20,
        n_online_em_iters=6,
        n_full_iters=2,
        sigma_anneal_start=1,
        sigma_anneal_iters=4,
        seed=0,
        device="cpu",
        initial_uncertainty_factor=8.0,
    )
    base.update(overrides)
    return Config(**base)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume_data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        simulate_dataset(
            out,
            n_particles=N,
            box=32,
            pixel_size_A=5.0,
            n_views=4,
            snr=1.0,
            particles_per_micrograph=50,
            seed=5,
        )
    return out / "particles.star"


@pytest.fixture(scope="module")
def reference_for(dataset: Path, tmp_path_factory):
    """reference_for(**settings) -> the outputs of the job with those settings (``job_config``),
    run once, never stopped."""
    done: dict[tuple, Path] = {}

    def outputs(**settings) -> Path:
        key = tuple(sorted(settings.items()))
        if key not in done:
            done[key] = tmp_path_factory.mktemp("reference")
            classify(dataset, job_config(**settings), done[key])
        return done[key]

    return outputs


@pytest.fixture(scope="module")
def reference(reference_for) -> Path:
    """Outputs of the default job run once, never stopped."""
    return reference_for()


def assert_same_outputs(a: Path, b: Path) -> None:
    """Same class averages, same particles (each once) with the same class and pose."""
    np.testing.assert_array_equal(
        mrcfile.read(a / "classes.mrcs"), mrcfile.read(b / "classes.mrcs")
    )
    pa = starfile.read(a / "particles.star")["particles"]
    pb = starfile.read(b / "particles.star")["particles"]
    assert len(pb) == N and pb["rlnImageName"].is_unique
    pd.testing.assert_frame_equal(pa, pb)
    ma = starfile.read(a / "model.star")
    mb = starfile.read(b / "model.star")
    ref = "rlnReferenceImage"  # NNNNNN@ + the path of each folder's own classes.mrcs
    pd.testing.assert_frame_equal(
        ma["model_classes"].drop(columns=[ref]), mb["model_classes"].drop(columns=[ref])
    )
    assert list(ma["model_classes"][ref].str.replace(str(a), "")) == list(
        mb["model_classes"][ref].str.replace(str(b), "")
    )
    cols = [
        "iteration",
        "phase",
        "n_particles",
        "temperature",
        "work_res_A",
        "mean_loglik",
        "changed",
    ]
    pd.testing.assert_frame_equal(ma["model_iterations"][cols], mb["model_iterations"][cols])


def crash_at(monkeypatch: pytest.MonkeyPatch, call: int, after_save: bool) -> None:
    """The n-th checkpoint save dies (before writing, or just after: the commit is done)."""
    real = JobCheckpoint.save
    calls = {"n": 0}

    def save(self, model, state, finished=False):
        calls["n"] += 1
        if calls["n"] == call and not after_save:
            raise Crash()
        real(self, model, state, finished)
        if calls["n"] == call:
            raise Crash()

    monkeypatch.setattr(JobCheckpoint, "save", save)


STEPS = batch_steps(job_config())
#: n_restarts: steps 7 (first full pass), 8 and 9 (the extra runs), then the other full pass.
RESTARTS = dict(n_restarts=3)
STOPS = {
    "first-iteration": ({}, 1, False),
    "online-em": ({}, 3, True),
    "last-online": ({}, 6, False),
    "full-pass": ({}, 7, True),
    "before-outputs": ({}, STEPS, True),
    "restarts-first-pass": (RESTARTS, 7, True),
    "in-restart": (RESTARTS, 8, False),
    "after-restart": (RESTARTS, 8, True),
    "last-restart": (RESTARTS, 9, True),
    "restarts-before-outputs": (RESTARTS, batch_steps(job_config(**RESTARTS)), True),
}


@pytest.mark.parametrize("settings,call,after_save", list(STOPS.values()), ids=list(STOPS))
def test_stopped_at_any_step_resumes_to_the_same_result(
    settings, call, after_save, dataset, reference_for, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        crash_at(m, call, after_save)
        with pytest.raises(Crash):
            classify(dataset, job_config(**settings), out)
    if call > 1 or after_save:
        assert (out / CHECKPOINT_NAME).exists()
    classify(dataset, job_config(**settings), out, resume=True)
    assert_same_outputs(reference_for(**settings), out)


def test_resume_counts_each_step_once(dataset, tmp_path, monkeypatch):
    """The resumed run starts at the step after the last commit: no iteration is done twice."""
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        crash_at(m, 4, after_save=True)
        with pytest.raises(Crash):
            classify(dataset, job_config(), out)
    steps: list[int] = []
    real = JobCheckpoint.save
    monkeypatch.setattr(
        JobCheckpoint,
        "save",
        lambda self, m, s, finished=False: (
            steps.append(s["point"]["step"]),
            real(self, m, s, finished),
        )[1],
    )
    result = classify(dataset, job_config(), out, resume=True)
    assert steps == list(range(5, STEPS + 1))
    assert [e.iteration for e in result.log] == list(range(1, STEPS + 1))
    assert result.model.distinct_seen == N  # after the full passes: every particle once
    events = read_events(out / EVENTS_NAME)  # each step logged once, the crash's replayed
    assert [e["seq"] for e in events] == list(range(STEPS + 1))
    assert [e["update"] for e in events] == [*range(1, STEPS + 1), STEPS]
    assert events[-1]["event"] == "finish" and events[-1]["n_processed"] == N


def test_interrupted_folder_is_not_overwritten_without_resume(dataset, tmp_path, monkeypatch):
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        crash_at(m, 3, after_save=True)
        with pytest.raises(Crash):
            classify(dataset, job_config(), out)
    before = (out / CHECKPOINT_NAME).read_bytes()
    with pytest.raises(InputError, match=r"holds an interrupted run \(step 3 of 8\); add --resume"):
        classify(dataset, job_config(), out)
    with pytest.raises(InputError, match=r"different settings \(n_classes: 4 -> 5\)"):
        classify(dataset, job_config(n_classes=5), out, resume=True)
    assert (out / CHECKPOINT_NAME).read_bytes() == before
    r = run_cli("classify", str(dataset), "--out", str(out), "-K", "4")
    assert r.exit_code == 2 and "add --resume" in " ".join(r.output.split())


def test_resume_with_the_file_named_otherwise(dataset, reference, tmp_path, monkeypatch):
    """Resumed from the particle file's folder with a relative path: the same particles."""
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        crash_at(m, 5, after_save=True)
        with pytest.raises(Crash):
            classify(dataset, job_config(), out)
    monkeypatch.chdir(dataset.parent)
    classify(Path(dataset.name), job_config(), out, resume=True)
    assert_same_outputs(reference, out)


def test_other_particles_are_refused(dataset, tmp_path, monkeypatch):
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        crash_at(m, 2, after_save=True)
        with pytest.raises(Crash):
            classify(dataset, job_config(), out)
    fewer = tmp_path / "fewer.star"
    star = starfile.read(dataset)
    star["particles"] = star["particles"].iloc[:-10]
    starfile.write(star, fewer)
    with pytest.raises(InputError, match="holds a run on other particles"):
        classify(fewer, job_config(), out, resume=True, project_dir=dataset.parent)


def test_finished_job_runs_again_and_resume_only_rewrites(
    dataset, reference, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    classify(dataset, job_config(), out)
    called = []
    monkeypatch.setattr(classify_module, "run_batch", _spy(classify_module.run_batch, called))
    classify(dataset, job_config(), out, resume=True)  # finished: only the outputs are written
    assert called == [8]
    classify(dataset, job_config(), out)  # without --resume a finished job starts again
    assert called == [8, None]
    assert_same_outputs(reference, out)


def _spy(run_batch, called):
    def wrapper(*args, resume=None, **kwargs):
        called.append(None if resume is None else resume[1].step)
        return run_batch(*args, resume=resume, **kwargs)

    return wrapper


def test_settings_changes_that_block_a_resume():
    """One check for batch and streaming: every changed setting but device / batch_particles."""
    saved = Config(n_classes=5, device="cpu")
    assert Config(n_classes=5, device="cuda", batch_particles=64).changes_from(saved) == []
    assert Config(n_classes=6, device="cpu").changes_from(saved) == ["n_classes: 5 -> 6"]
