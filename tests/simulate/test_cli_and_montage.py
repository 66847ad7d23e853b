"""The ``simulate`` CLI command (through typer's runner) and the PNG montage writer."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from cryoclass.cli import simulate as sim_cli
from cryoclass.outputs.montage import normalise_tile, save_montage


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("simulate")(sim_cli.command)
    app.command("other")(lambda: None)  # two commands, so "simulate" is a real subcommand
    return app


def test_cli_simulate_writes_dataset(tmp_path):
    out = tmp_path / "data"
    res = CliRunner().invoke(
        _app(),
        [
            "simulate",
            "--out",
            str(out),
            "--n",
            "30",
            "--box",
            "48",
            "--apix",
            "3",
            "--views",
            "3",
            "--per-mic",
            "20",
            "--seed",
            "2",
            "--snr",
            "0.1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "Simulated 30 particles" in res.output and "particles_preview.png" in res.output
    truth = pd.read_csv(out / "truth.csv")
    assert len(truth) == 30 and truth["micrograph"].max() == 2
    assert (out / "Movies" / "mic_0002.mrcs").is_file()


def test_cli_rejects_bad_options(tmp_path):
    bad = CliRunner().invoke(_app(), ["simulate", "--out", str(tmp_path), "--per-mic", "3-1"])
    assert bad.exit_code != 0
    odd = CliRunner().invoke(_app(), ["simulate", "--out", str(tmp_path), "--box", "49"])
    assert odd.exit_code != 0
    assert sim_cli.parse_per_mic("100-300") == (100, 300) and sim_cli.parse_per_mic("7") == 7


def test_save_montage(tmp_path):
    imgs = np.random.default_rng(0).standard_normal((7, 32, 32)).astype(np.float32)
    p = save_montage(
        imgs, tmp_path / "m.png", labels=[f"class {i}" for i in range(7)], ncols=4, title="seven"
    )
    png = mpimg.imread(p)
    assert png.ndim == 3 and png.shape[1] > png.shape[0] > 100
    save_montage(imgs[0], tmp_path / "one.png")  # a single image is accepted
    assert (tmp_path / "one.png").stat().st_size > 0
    with pytest.raises(ValueError):
        save_montage(imgs, tmp_path / "x.png", labels=["a"])
    assert not (tmp_path / "x.png").exists()
    t = normalise_tile(np.arange(100.0).reshape(10, 10))
    assert t.min() == 0.0 and t.max() == 1.0
    assert np.all(normalise_tile(np.ones((4, 4))) == 0.5)
