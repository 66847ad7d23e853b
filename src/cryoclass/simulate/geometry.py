"""3D rotations for projection: RELION Euler angles, in-plane rotations, view directions.

A rotation matrix A (3 x 3) maps map coordinates (x, y, z) to image coordinates; the projection
is ``P_A(x, y) = integral of V(A^T (x, y, z)) dz`` (RELION's convention: ``A =
Euler_angles2matrix(rot, tilt, psi)``). The projection direction in map coordinates is the third
row of A. Prepending ``Rz(a)`` (:func:`rot_z`) turns the projection's content counter-clockwise by
``a`` in (x = column, y = row): ``P_{Rz(a) A} = R(a) P_A``. RELION's ``Euler(0, 0, psi) =
Rz(-psi)``, so a particle with rlnAnglePsi = psi is ``R(-psi)`` applied to its psi = 0 projection.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "euler_to_matrix",
    "matrix_to_euler",
    "rot_z",
    "rotvec_to_matrix",
    "direction_to_matrix",
    "fibonacci_hemisphere",
]


def euler_to_matrix(
    rot_deg: np.ndarray | float, tilt_deg: np.ndarray | float, psi_deg: np.ndarray | float
) -> np.ndarray:
    """RELION ``Euler_angles2matrix`` (ZYZ) for angles in degrees.

    Args:
        rot_deg, tilt_deg, psi_deg: (n,) arrays or scalars, degrees.

    Returns:
        (n, 3, 3) float64 matrices (n = 1 for scalars).
    """
    a, b, g = (
        np.deg2rad(np.atleast_1d(np.asarray(v, dtype=np.float64)))
        for v in (rot_deg, tilt_deg, psi_deg)
    )
    a, b, g = np.broadcast_arrays(a, b, g)
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    m = np.empty(a.shape + (3, 3))
    m[..., 0, 0] = cg * cc - sg * sa
    m[..., 0, 1] = cg * cs + sg * ca
    m[..., 0, 2] = -cg * sb
    m[..., 1, 0] = -sg * cc - cg * sa
    m[..., 1, 1] = -sg * cs + cg * ca
    m[..., 1, 2] = sg * sb
    m[..., 2, 0] = sc
    m[..., 2, 1] = ss
    m[..., 2, 2] = cb
    return m


def matrix_to_euler(mats: np.ndarray) -> np.ndarray:
    """Inverse of :func:`euler_to_matrix`: (n, 3, 3) -> (n, 3) RELION (rot, tilt, psi) in degrees,
    tilt in [0, 180]; for tilt 0 or 180 the angle is put into psi (rot = 0)."""
    m = np.asarray(mats, dtype=np.float64).reshape(-1, 3, 3)
    sin_tilt = np.hypot(m[:, 0, 2], m[:, 1, 2])
    tilt = np.arctan2(sin_tilt, m[:, 2, 2])
    regular = sin_tilt > 1e-6
    rot = np.where(regular, np.arctan2(m[:, 2, 1], m[:, 2, 0]), 0.0)
    psi_reg = np.arctan2(m[:, 1, 2], -m[:, 0, 2])
    psi_top = np.where(
        m[:, 2, 2] > 0, np.arctan2(-m[:, 1, 0], m[:, 0, 0]), np.arctan2(m[:, 1, 0], -m[:, 0, 0])
    )
    psi = np.where(regular, psi_reg, psi_top)
    return np.rad2deg(np.stack([rot, tilt, psi], axis=1))


def rot_z(angle_deg: np.ndarray | float) -> np.ndarray:
    """(n, 3, 3) rotations by ``angle_deg`` about z, counter-clockwise in (x, y):
    ``[[c, -s, 0], [s, c, 0], [0, 0, 1]]``. ``Rz(a) A`` projects to ``R(a)`` of A's projection."""
    t = np.deg2rad(np.atleast_1d(np.asarray(angle_deg, dtype=np.float64)))
    c, s = np.cos(t), np.sin(t)
    m = np.zeros(t.shape + (3, 3))
    m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1] = c, -s, s, c
    m[..., 2, 2] = 1.0
    return m


def rotvec_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues: (n, 3) rotation vectors (axis * angle, radians) -> (n, 3, 3) matrices."""
    v = np.atleast_2d(np.asarray(rotvec, dtype=np.float64))
    theta = np.linalg.norm(v, axis=1)
    k = v / np.where(theta > 0, theta, 1.0)[:, None]
    kx = np.zeros((len(v), 3, 3))
    kx[:, 0, 1], kx[:, 0, 2], kx[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    kx[:, 1, 0], kx[:, 2, 0], kx[:, 2, 1] = k[:, 2], -k[:, 1], k[:, 0]
    s, c = np.sin(theta)[:, None, None], np.cos(theta)[:, None, None]
    return np.eye(3)[None] + s * kx + (1 - c) * (kx @ kx)


def direction_to_matrix(dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """View matrices (psi = 0) projecting along unit directions (map coordinates).

    Args:
        dirs: (n, 3) unit vectors (x, y, z).

    Returns:
        ``(mats, rot_tilt)``: (n, 3, 3) RELION matrices whose third row is the direction, and the
        (n, 2) RELION rot, tilt angles in degrees.
    """
    d = np.atleast_2d(np.asarray(dirs, dtype=np.float64))
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    tilt = np.rad2deg(np.arccos(np.clip(d[:, 2], -1, 1)))
    rot = np.rad2deg(np.arctan2(d[:, 1], d[:, 0]))
    rot = np.where(np.hypot(d[:, 0], d[:, 1]) < 1e-9, 0.0, rot)
    return euler_to_matrix(rot, tilt, 0.0), np.stack([rot, tilt], axis=1)


def fibonacci_hemisphere(n: int) -> np.ndarray:
    """(n, 3) nearly uniform unit directions with z > 0 (Fibonacci spiral); the first is closest to
    +z. A projection along -d is the mirror image of the one along d, so a hemisphere suffices."""
    i = np.arange(n) + 0.5
    z = 1.0 - i / n
    t = np.pi * (3.0 - np.sqrt(5.0)) * i
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(t), r * np.sin(t), z], axis=1)
