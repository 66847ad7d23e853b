"""Fourier helpers: band round trip, padded sampling, rotation and shift conventions."""

import pytest
import torch

from cryoclass.physics.fourier import (
    band_to_image,
    fourier_shift_images,
    make_band,
    padded_fft,
    rfft_band,
    rotate_points,
    sample_bilinear,
    shift_phase,
)


def _blob(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.exp(-((x - 3) ** 2 + (y + 2) ** 2) / 8.0) + 0.5 * torch.exp(
        -((x + 4) ** 2 + y**2) / 5.0
    )


def _grid(d: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    c = torch.arange(d, dtype=torch.float32) - d // 2
    y, x = torch.meshgrid(c, c, indexing="ij")
    return x, y


def _blob_image(d: int = 32) -> torch.Tensor:
    x, y = _grid(d)
    return _blob(x, y)[None]


def test_band_round_trip_is_a_lowpass():
    img = _blob_image()
    band = make_band(32, 16, include_dc=True)
    back = band_to_image(rfft_band(img, band), band).real
    assert torch.allclose(back, img, atol=1e-4)
    low = make_band(32, 4, include_dc=True)
    smooth = band_to_image(rfft_band(img, low), low).real
    assert (smooth - img).abs().max() > 1e-2  # a real low-pass changes the image


def test_padded_sampling_matches_grid_values_at_integer_points():
    img = _blob_image()
    band = make_band(32, 10)
    exact = rfft_band(img, band)
    ft = padded_fft(img)
    got = sample_bilinear(ft, torch.zeros(1, dtype=torch.long), band.kx[None], band.ky[None])
    # gridding correction makes on-grid samples differ slightly from the plain FFT
    assert torch.allclose(got, exact, atol=0.05 * exact.abs().max())


def test_rotation_convention_matches_a_90_degree_turn():
    # An image whose content is turned by -psi has transform A(R_psi k) (poses.py convention).
    img = _blob_image()
    psi = torch.tensor([90.0])
    x, y = _grid()
    turned = _blob(-y, x)[None]  # content turned by -90 deg: new(x) = old(R_90 x)
    band = make_band(32, 10)
    rx, ry = rotate_points(band.kx, band.ky, psi)
    sampled = sample_bilinear(padded_fft(img), torch.zeros(1, dtype=torch.long), rx, ry)
    direct = rfft_band(turned, band)
    a = torch.nn.functional.cosine_similarity(
        torch.view_as_real(sampled).flatten()[None], torch.view_as_real(direct).flatten()[None]
    ).item()
    b_rx, b_ry = rotate_points(band.kx, band.ky, -psi)
    wrong = sample_bilinear(padded_fft(img), torch.zeros(1, dtype=torch.long), b_rx, b_ry)
    b = torch.nn.functional.cosine_similarity(
        torch.view_as_real(wrong).flatten()[None], torch.view_as_real(direct).flatten()[None]
    ).item()
    assert a > 0.95 > b


def test_shift_phase_moves_content_by_plus_t():
    img = _blob_image()
    moved = fourier_shift_images(img, torch.tensor([3.0]), torch.tensor([-2.0]))
    assert torch.allclose(moved, torch.roll(img, shifts=(-2, 3), dims=(-2, -1)), atol=1e-4)
    band = make_band(32, 16)
    ph = shift_phase(band.kx, band.ky, torch.tensor(3.0), torch.tensor(-2.0), 32)
    assert torch.allclose(rfft_band(img, band) * ph, rfft_band(moved, band), atol=1e-4)


@pytest.mark.parametrize("box", [32, 33])
def test_padded_window_sampling_matches_grid_values_for_even_and_odd_boxes(box):
    # The padded transform puts pixel (D//2, D//2) at the origin, as rfft_band does, also for an
    # odd box; the window kept (radius) does not change the samples inside it.
    x = torch.arange(box, dtype=torch.float32) - box // 2
    img = torch.exp(-((x[None] - 3) ** 2 + (x[:, None] + 2) ** 2) / 8)[None]
    band = make_band(box, 10)
    exact = rfft_band(img, band)
    one = torch.zeros(1, dtype=torch.long)
    full = sample_bilinear(padded_fft(img), one, band.kx[None], band.ky[None])
    window = sample_bilinear(padded_fft(img, radius=10), one, band.kx[None], band.ky[None])
    assert torch.allclose(full, exact, atol=0.03 * exact.abs().max())
    assert torch.allclose(window, full, atol=1e-5)
    assert padded_fft(img, radius=10).data.shape[-1] < padded_fft(img).data.shape[-1]
