"""CUDA agrees with the CPU: one E-step on the same model and particles, and a whole batch job.
Run by ``benchmarks/gpu_check.sh`` (``pytest -m gpu``); skipped without CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoclass.config import Config
from cryoclass.engine.em import Engine
from cryoclass.engine.model import ModelState
from cryoclass.engine.source import load_batch
from cryoclass.quality import adjusted_rand_index
from cryoclass.schedules.batch import run_batch

from .conftest import APIX, BOX, make_set

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

FAST = dict(
    n_classes=3,
    batch_size_per_class=60,
    n_online_em_iters=6,
    n_full_iters=1,
    sigma_anneal_start=1,
    sigma_anneal_iters=3,
    max_shift_px=3.0,
    psi_step_deg=6.0,
    mask_diameter_A=BOX * APIX * 0.9,
    seed=0,
)


def _on(state: ModelState, device: str) -> ModelState:
    """A copy of state with every tensor on device."""

    def move(v):
        if isinstance(v, torch.Tensor):
            return v.to(device)
        return {k: move(x) for k, x in v.items()} if isinstance(v, dict) else v

    return ModelState.from_dict(move(state.to_dict()))


def test_one_estep_on_cuda_equals_cpu():
    """Same model, same particles, float32 exhaustive search: the same classes and poses, and
    statistics equal to float32 rounding."""
    src, _ = make_set(240, noise_sd=0.6, seed=3)
    cfg = Config(**FAST, exhaustive_search=True, coarse_precision="float32")
    rows = np.arange(240)
    cpu = Engine(cfg, BOX, APIX, "cpu")
    batch = load_batch(cpu, src, rows)
    cpu.initialise(batch)
    _, stats, _ = cpu.expectation(batch, 1.0)
    cpu.absorb(stats, 240, 240)
    gpu = Engine(cfg, BOX, APIX, "cuda")
    gpu.state = _on(cpu.state, "cuda")

    r_cpu, s_cpu, _ = cpu.expectation(batch, 0.0)
    r_gpu, s_gpu, _ = gpu.expectation(load_batch(gpu, src, rows), 0.0)
    same = r_cpu.cls == r_gpu.cls
    assert same.mean() >= 0.98
    assert np.mean(np.abs(r_cpu.psi_deg - r_gpu.psi_deg)[same] < 1e-3) >= 0.98
    num_c, num_g = s_cpu.num, s_gpu.num.cpu()
    assert float((num_c - num_g).abs().max() / num_c.abs().max()) < 1e-3


def test_batch_job_on_cuda_agrees_with_cpu():
    """A whole batch job (default precision: bfloat16 coarse search where fast) on CUDA and on
    the CPU: the same grouping of particles and as good against the truth."""
    src, truth = make_set(480, noise_sd=0.6, seed=5)
    res = {dev: run_batch(src, Config(**FAST, device=dev)).particles.cls for dev in ("cpu", "cuda")}
    ari_cpu = adjusted_rand_index(truth["cls"], res["cpu"])
    ari_gpu = adjusted_rand_index(truth["cls"], res["cuda"])
    print(
        f"\nARI vs truth: cpu {ari_cpu:.3f}, cuda {ari_gpu:.3f}; cpu vs cuda "
        f"{adjusted_rand_index(res['cpu'], res['cuda']):.3f}"
    )
    assert adjusted_rand_index(res["cpu"], res["cuda"]) >= 0.9
    assert ari_gpu >= ari_cpu - 0.05
