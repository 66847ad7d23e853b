"""MRC maps as input: resampling, normalisation, belts, a symmetric map's views."""

from __future__ import annotations

import math

import mrcfile
import numpy as np
import pandas as pd
import pytest

from cryoclass.simulate import simulate_dataset
from cryoclass.simulate.maps import fourier_resample, load_map
from cryoclass.simulate.membrane import add_belt, auto_tm_center
from cryoclass.simulate.phantom import gaussian_blobs_volume, phantom_volume


def _ncc(a, b) -> float:
    a = np.asarray(a, np.float64) - np.mean(a)
    b = np.asarray(b, np.float64) - np.mean(b)
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _write(path, vol, apix):
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.asarray(vol, np.float32))
        m.voxel_size = apix
    return path


def test_fourier_resample_keeps_scale():
    fine = gaussian_blobs_volume(72, 2.0)
    coarse, apix = fourier_resample(fine, 2.0, 3.0)
    assert coarse.shape == (48,) * 3 and apix == pytest.approx(3.0)
    direct = gaussian_blobs_volume(48, 3.0)
    assert _ncc(coarse, direct) > 0.99
    # a ratio without an integer size: the map is padded first, the pixel stays exact
    odd, apix2 = fourier_resample(fine, 2.0, 2.9)
    assert apix2 == pytest.approx(2.9, rel=1e-3)


def test_load_map_resamples_and_normalises(tmp_path):
    path = _write(tmp_path / "map.mrc", gaussian_blobs_volume(80, 2.0) * 7.0 + 0.3, 2.0)
    with pytest.warns(UserWarning, match="cuts"):  # the phantom nearly fills 144 A
        vol, info = load_map(path, box=48, pixel_size_A=3.0)
    assert vol.shape == (48,) * 3 and vol.max() == pytest.approx(1.0) and vol.min() >= 0.0
    assert info["map_input_apix"] == pytest.approx(2.0) and info["map_input_box"] == 80
    assert _ncc(vol, phantom_volume(48, 3.0)) > 0.98
    with mrcfile.new(tmp_path / "flat.mrc") as m:
        m.set_data(np.zeros((4, 8, 8), np.float32))
    with pytest.raises(ValueError), pytest.warns(UserWarning):
        load_map(tmp_path / "flat.mrc", 48, 3.0, map_pixel_size_A=1.0)


def test_belt_around_tm_slab_and_auto_centre():
    vol = phantom_volume(48, 3.0)
    shifted = np.roll(vol, 4, axis=0)  # TM slab now at z = +12 A
    out, info = add_belt(shifted, 3.0, tm_center_A=12.0)
    assert info["tm_center_A"] == 12.0 and 80 < info["outer_diameter_A"] < 130
    belt = out - shifted
    zc = belt.sum(axis=(1, 2))
    assert abs((np.argmax(zc) - 24) * 3.0 - 12.0) <= 6.0  # belt centred on the slab
    # a map carrying a belt: the widest part is the slab
    assert abs(auto_tm_center(out, 3.0) - 12.0) <= 6.0


def test_simulate_from_symmetric_map(tmp_path):
    """A C4 map: the top view is view 0 with an in-plane period of 90 degrees."""
    unit = [
        ((14.0, 4.0, 10.0), (5.0, 4.0, 12.0), (0.0, 0.0, 20.0), 1.0),
        ((20.0, -6.0, -20.0), (6.0, 4.0, 6.0), (0.0, 0.0, 0.0), 0.8),
    ]
    blobs = []
    for k in range(4):
        t = math.radians(90 * k)
        c, s = math.cos(t), math.sin(t)
        for (x, y, z), sig, rv, w in unit:
            blobs.append(((c * x - s * y, s * x + c * y, z), sig, (0.0, 0.0, rv[2] + 90 * k), w))
    path = _write(tmp_path / "c4.mrc", gaussian_blobs_volume(48, 3.0, blobs), 3.0)
    res = simulate_dataset(
        tmp_path / "out",
        n_particles=30,
        box=48,
        pixel_size_A=3.0,
        n_views=3,
        map_path=path,
        particles_per_micrograph=30,
        view_candidates=60,
        membrane=True,
    )
    views = pd.read_csv(tmp_path / "out" / "views.csv")
    assert views["psi_period"][0] == 90.0 and views["tilt"][0] == 0.0
    assert res.n_particles == 30
