"""Annealing: how uncertain the E-step is told to be, by the amount of data processed.

The E-step's temperature is T = max(1, f x spread / 4) (``Engine.batch_temperature``); f, the
annealing factor, falls with the particles processed, counted in minibatches, so a batch job and
a stream anneal on the same amount of data. Re-seeding empty classes is an annealing-time rescue:
only while f > 0.
"""

from __future__ import annotations

from cryoclass.config import Config


def annealing_factor(config: Config, processed: float) -> float:
    """Annealing factor f: initial_uncertainty_factor until sigma_anneal_start minibatches of
    particles have been processed, then linearly to 0 over sigma_anneal_iters minibatches.

    processed: particles processed so far (``ModelState.processed``). In a batch job one
    minibatch is one online-EM iteration; in a stream the count is of particles as they arrive,
    so both modes anneal on the same amount of data."""
    p = processed / float(config.minibatch_size)
    start, length = config.sigma_anneal_start, config.sigma_anneal_iters
    f0 = config.initial_uncertainty_factor
    if p <= start:
        return f0
    if length <= 0 or p >= start + length:
        return 0.0
    return f0 * (1.0 - (p - start) / length)


def reseed_due(config: Config, factor: float) -> bool:
    """Whether an online-EM step at annealing factor ``factor`` re-seeds empty classes
    (``Engine.reseed_empty``): when enabled (``reseed_empty``), while annealing (f > 0)."""
    return config.reseed_empty and factor > 0
