"""cryoclass: batch and streaming 2D classification of cryo-EM particle images.

Data flows one way: ``io`` (files) -> particles -> ``engine`` (E-step, M-step, schedules)
-> model state -> ``outputs`` (class stacks, STAR/.cs, gallery).
"""

__version__ = "0.1.0"
