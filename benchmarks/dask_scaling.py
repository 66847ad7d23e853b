"""Speed-up of a batch job on a Dask LocalCluster of 1 and 2 workers, and what it moves.

    python benchmarks/dask_scaling.py [--n 3000] [--box 64] [--classes 10] [--repeats 2]

Simulates a data set (or uses --data DIR with particles.star), then runs the same batch job
(``run_batch``) four ways: in this process with torch on 1 thread and on all cores, and with
``DaskEStep`` on LocalClusters of 1 and 2 worker processes (1 torch thread each; the client's
M-step on 1 thread), round robin --repeats times. Prints the best wall time of each (cluster
start-up excluded), the
online-EM and full-pass parts, the largest class-image difference against the single-process
run, and the payload bytes the 2-worker run moved per E-step.

Then, on paper, the same bookkeeping for a facility job (--paper-n particles, K, box) on
--paper-gpus GPUs over --paper-nodes nodes: per E-step, GPU compute (from the score GEMM's
FLOPs at an assumed sustained --gpu-tflops) against the bytes moved over the network and
read from the shared filesystem.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch

from cryoclass.config import Config
from cryoclass.distributed import DaskEStep, open_client, parse_cluster
from cryoclass.engine.em import Engine
from cryoclass.engine.executor import ShardPlan
from cryoclass.engine.poses import psi_grid, shift_grid, working_steps
from cryoclass.io import read_particles
from cryoclass.physics.fourier import make_band
from cryoclass.schedules.batch import run_batch
from cryoclass.simulate import simulate_dataset

RESULT_BYTES_PER_CLASS = 4  # posterior (n, K) float32 in ParticleResult
RESULT_BYTES_FIXED = 8 * 3 + 4 * 6  # index, cls, n_significant (int64) + 6 float32 fields
METADATA_BYTES = 175  # a shard's metadata per particle (measured, pickled)


def timed_job(pset, config: Config, estep=None, threads: int = 1) -> dict:
    """Wall time of run_batch (torch on ``threads`` threads here); online and full parts from
    its log; the final class images."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    res = run_batch(pset, config, estep=estep)
    wall = time.perf_counter() - t0
    torch.set_num_threads(1)
    online = sum(e.seconds for e in res.log if e.phase == "online")
    return {
        "wall_s": round(wall, 2),
        "online_s": round(online, 2),
        "full_s": round(wall - online, 2),
        "_classes": res.state.class_images.clone(),
    }


def per_estep_traffic(estep: DaskEStep) -> dict:
    t = estep.traffic
    n = max(t.esteps, 1)
    return {
        "esteps": t.esteps,
        "model_kB": round(t.model / n / 1e3, 1),
        "shard_metadata_kB": round(t.shards / n / 1e3, 1),
        "results_kB": round(t.results / n / 1e3, 1),
        "scores_kB": round(t.scores / n / 1e3, 1),
    }


def paper_estimate(
    n: int,
    k: int,
    box: int,
    apix: float,
    res_A: float,
    gpus: int,
    nodes: int,
    gpu_tflops: float,
    gemm_share: float,
    net_GBps: float,
    fs_GBps: float,
) -> dict:
    """Per-E-step compute vs data movement for a job on gpus GPUs over nodes nodes (seconds).
    A GPU's time per particle: the score GEMM's FLOPs at gpu_tflops, divided by the GEMM's
    share of the E-step time (the rest: rotations, FFTs, M-step interpolation)."""
    cfg = Config(n_classes=k, max_res_A=res_A)
    eng = Engine(cfg, box, apix)
    band = make_band(box, eng.r_max, r_lo=0.5)
    psi_step, shift_step = working_steps(
        res_A, apix, eng.particle_radius_A, cfg.psi_step_deg, cfg.shift_step_px
    )
    n_rot = psi_grid(psi_step, "cpu").numel()
    shifts = shift_grid(cfg.max_shift_px, shift_step, "cpu")
    lat = torch.round(shifts / shift_step).long()
    n_coarse = int((lat % 2 == 0).all(1).sum())
    # coarse stage: every second rotation x shifts on the doubled lattice, one real GEMM;
    # fine stage: top 4 classes x 3 rotations x 9 shifts
    flops = 2 * 2 * band.size * k * (n_rot // 2 * n_coarse + 4 * 27)
    t_particle = flops / (gpu_tflops * 1e12) / gemm_share
    points = int(eng.grid_mask(eng.r_max).sum())
    stats_bytes = 2 * k * points * (8 + 4)
    plan = ShardPlan()  # default: minibatch shards of batch_particles, full-pass shards of 8 chunks
    model_bytes = 4 * k * box * box
    remote = (nodes - 1) / nodes  # share of the workers on other nodes than the client

    def one(m: int, shards: int) -> dict:
        """shards: of the fixed shard plan (engine.executor.ShardPlan), whatever the GPUs."""
        compute = m * t_particle / gpus
        net = (
            model_bytes * gpus
            + shards * stats_bytes
            + m * (METADATA_BYTES + RESULT_BYTES_FIXED + RESULT_BYTES_PER_CLASS * k)
        ) * remote
        read = m * 4 * box * box
        return {
            "particles": m,
            "shards": shards,
            "gpu_compute_s": round(compute, 3),
            "network_MB": round(net / 1e6, 1),
            "network_s": round(net / (net_GBps * 1e9), 3),
            "filesystem_GB": round(read / 1e9, 2),
            "filesystem_s": round(read / (fs_GBps * 1e9), 2),
        }

    return {
        "job": {
            "n": n,
            "K": k,
            "box": box,
            "apix": apix,
            "res_A": res_A,
            "gpus": gpus,
            "nodes": nodes,
            "gpu_tflops_assumed": gpu_tflops,
            "gemm_share_assumed": gemm_share,
            "net_GBps": net_GBps,
            "fs_GBps": fs_GBps,
        },
        "per_particle": {
            "band_points": band.size,
            "rotations": n_rot,
            "shifts": len(shifts),
            "coarse_shifts": n_coarse,
            "gflop": round(flops / 1e9, 3),
            "gpu_ms": round(t_particle * 1e3, 4),
            "gpu_particles_per_s": round(1 / t_particle),
        },
        "model_MB": round(model_bytes / 1e6, 2),
        "shard_statistics_MB": round(stats_bytes / 1e6, 2),
        "online_iteration": one(cfg.minibatch_size, len(plan.minibatch(eng, cfg.minibatch_size))),
        "full_pass": one(n, len(plan.full(eng, n))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="folder with particles.star (default: simulate)")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--apix", type=float, default=3.0)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--res", type=float, default=8.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--paper-n", type=int, default=1_000_000)
    ap.add_argument("--paper-classes", type=int, default=100)
    ap.add_argument("--paper-box", type=int, default=128)
    ap.add_argument("--paper-apix", type=float, default=1.5)
    ap.add_argument("--paper-res", type=float, default=6.0)
    ap.add_argument("--paper-gpus", type=int, default=8)
    ap.add_argument("--paper-nodes", type=int, default=2)
    ap.add_argument(
        "--gpu-tflops",
        type=float,
        default=20.0,
        help="sustained FP32 TFLOP/s of one GPU on the score GEMMs (assumption)",
    )
    ap.add_argument(
        "--gemm-share",
        type=float,
        default=0.12,
        help="share of E-step time in the score GEMM (estep_throughput.py: "
        "coarse-to-fine GEMM FLOPs x particles/s / kernel GFLOP/s)",
    )
    ap.add_argument("--net-GBps", type=float, default=3.0, help="network between nodes, GB/s")
    ap.add_argument("--fs-GBps", type=float, default=5.0, help="shared filesystem, GB/s")
    ap.add_argument("--skip-measure", action="store_true", help="only the paper estimate")
    args = ap.parse_args()

    out: dict = {}
    if not args.skip_measure:
        out["measured"] = measure(args)
    out["paper"] = paper_estimate(
        args.paper_n,
        args.paper_classes,
        args.paper_box,
        args.paper_apix,
        args.paper_res,
        args.paper_gpus,
        args.paper_nodes,
        args.gpu_tflops,
        args.gemm_share,
        args.net_GBps,
        args.fs_GBps,
    )
    print(json.dumps(out, indent=1))


def measure(args) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "data"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                simulate_dataset(
                    data,
                    n_particles=args.n,
                    box=args.box,
                    pixel_size_A=args.apix,
                    n_views=args.classes,
                    snr=0.2,
                    particles_per_micrograph=100,
                    seed=1,
                )
        pset = read_particles(data / "particles.star")
        config = Config(
            n_classes=args.classes,
            max_res_A=args.res,
            n_online_em_iters=10,
            batch_size_per_class=50,
            n_full_iters=2,
            device="cpu",
            seed=0,
        )
        cores = os.cpu_count() or 1
        runs: dict = {
            "machine": {
                "cpu_cores": cores,
                "torch": torch.__version__,
                "load_average_before": os.getloadavg()[0],
            },
            "job": {
                "n": len(pset),
                "box": pset.box,
                "K": args.classes,
                "res_A": args.res,
                "minibatch": config.minibatch_size,
                "online_iters": config.n_online_em_iters,
                "full_passes": config.n_full_iters,
            },
        }
        torch.set_num_threads(1)
        with contextlib.ExitStack() as stack:
            esteps, starts = {}, {}
            for workers in (1, 2):
                t0 = time.perf_counter()
                client = stack.enter_context(
                    open_client(parse_cluster(f"local:{workers}"), torch_threads=1)
                )
                starts[workers] = round(time.perf_counter() - t0, 1)
                esteps[workers] = DaskEStep(client)
            plan = {
                "local_1_thread": (None, 1),
                f"local_{cores}_threads": (None, cores),
                "dask_1_workers": (esteps[1], 1),
                "dask_2_workers": (esteps[2], 1),
            }
            for _ in range(args.repeats):  # round robin: each configuration sees the same load
                for name, (estep, threads) in plan.items():
                    run = timed_job(pset, config, estep, threads)
                    if name not in runs or run["wall_s"] < runs[name]["wall_s"]:
                        runs[name] = run
            for workers in (1, 2):
                runs[f"dask_{workers}_workers"]["cluster_start_s"] = starts[workers]
                t = per_estep_traffic(esteps[workers])
                t["esteps"] //= args.repeats
                runs[f"dask_{workers}_workers"]["traffic_per_estep"] = t
        runs["machine"]["load_average_after"] = os.getloadavg()[0]
        ref = runs["local_1_thread"]["_classes"]
        scale = float(ref.abs().max())
        for name, run in runs.items():
            if isinstance(run, dict) and "_classes" in run:
                run["max_class_diff_rel"] = float((run.pop("_classes") - ref).abs().max()) / scale
        one, two = runs["dask_1_workers"], runs["dask_2_workers"]
        runs["speedup_2_vs_1_workers"] = {
            k: round(one[k] / two[k], 2) for k in ("wall_s", "online_s", "full_s")
        }
        runs["speedup_2_workers_vs_local_1_thread"] = round(
            runs["local_1_thread"]["wall_s"] / two["wall_s"], 2
        )
        return runs


if __name__ == "__main__":
    main()
