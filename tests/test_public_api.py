"""The package's public face: the names a user imports from ``cryoclass``."""

from __future__ import annotations

import os
import subprocess
import sys


def test_public_names():
    from cryoclass import ClassifyResult, Config, classify, read_particles, simulate, stream

    assert Config(n_classes=3).n_classes == 3
    assert callable(classify) and callable(read_particles)
    assert ClassifyResult.__name__ == "ClassifyResult"
    assert callable(stream.Stream) and callable(simulate.simulate_dataset)


def test_import_is_light_and_leaves_the_environment_alone():
    """``import cryoclass`` loads no torch and sets no environment variable (the CLI sets
    OMP_WAIT_POLICY for itself, ``cryoclass.cli.main``)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = (
        "import os, sys, cryoclass; print('torch' in sys.modules, 'OMP_WAIT_POLICY' in os.environ)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    ).stdout.split()
    assert out == ["False", "False"]
