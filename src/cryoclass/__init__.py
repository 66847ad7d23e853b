"""cryoclass: batch and streaming 2D classification of cryo-EM particle images.

Data flows one way: ``io`` (files) -> particles -> ``engine`` (E-step, M-step, schedules)
-> model state -> ``outputs`` (class stacks, STAR/.cs, gallery).
"""

import os as _os

# torch's OpenMP threads spin-wait by default, which starves other processes (a streaming
# watcher, the dashboard, a second job) on small machines; must be set before torch loads.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
