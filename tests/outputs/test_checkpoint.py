"""The one checkpoint of batch and stream jobs (``outputs.checkpoint``): what it refuses to
resume, each time with the file and the reason."""

from __future__ import annotations

import pytest

from cryoclass.config import Config
from cryoclass.io import InputError
from cryoclass.outputs.checkpoint import CHECKPOINT_NAME, JobCheckpoint


def test_other_jobs_settings_particles_versions_and_damage_are_refused(tmp_path):
    cfg = Config(n_classes=2)
    JobCheckpoint(tmp_path, "stream", cfg).save(None, {"x": 1}, finished=True)
    ck = JobCheckpoint(tmp_path, "stream", Config(n_classes=2, device="cpu")).load()
    assert (ck.job, ck.model, ck.state, ck.finished) == ("stream", None, {"x": 1}, True)
    with pytest.raises(InputError, match="holds a stream run, not a batch run"):
        JobCheckpoint(tmp_path, "batch", cfg).read()
    with pytest.raises(InputError, match=r"different settings \(n_classes: 2 -> 3\)"):
        JobCheckpoint(tmp_path, "stream", Config(n_classes=3)).load()
    JobCheckpoint(tmp_path, "batch", cfg, inputs="abc").save(None, {})
    with pytest.raises(InputError, match="holds a run on other particles"):
        JobCheckpoint(tmp_path, "batch", cfg, inputs="abd").load()
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"half a checkpoint")
    with pytest.raises(InputError, match="cannot read the checkpoint"):
        JobCheckpoint(tmp_path, "batch", cfg).read()
    old = tmp_path / "old"
    old.mkdir()
    (old / "stream_state.pt").write_bytes(b"")
    with pytest.raises(InputError, match="stream_state.pt: holds a checkpoint of an earlier"):
        JobCheckpoint(old, "stream", cfg).exists()
