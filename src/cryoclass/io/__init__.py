"""Particle data model and file I/O: RELION STAR, CryoSPARC .cs, MRC stacks, rejects CSV.

Units everywhere: Å (defocus, pixel size, origins), degrees (angles), kV, mm, pixels.
"""

from .atomic import atomic_path, atomic_write
from .cs import read_cs_table, write_cs
from .errors import InputError, OutputError
from .particles import ParticleSet, Reject, read_particles
from .rejects import read_rejects, write_rejects
from .stacks import (
    clear_stack_cache,
    open_stack,
    read_images,
    stack_pixel_size_A,
    stack_shape,
    write_stack,
)
from .star import read_star, write_star

__all__ = [
    "InputError",
    "OutputError",
    "ParticleSet",
    "Reject",
    "atomic_path",
    "atomic_write",
    "clear_stack_cache",
    "open_stack",
    "read_cs_table",
    "read_images",
    "read_particles",
    "read_rejects",
    "read_star",
    "stack_pixel_size_A",
    "stack_shape",
    "write_cs",
    "write_rejects",
    "write_stack",
    "write_star",
]
