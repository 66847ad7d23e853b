"""Schedules: in what order the engine's E-steps and M-steps run, and how uncertain each is.

One layer for batch and streaming, so that a change to the algorithm lands once:

    annealing.py   annealing factor by particles processed; when to re-seed empty classes
    online.py      online_step: factor -> minibatch E-step -> absorb -> re-seed -> record
    passes.py      full_pass, and final_passes: how every classification ends
    batch.py       run_batch: the batch job (online-EM iterations, then the final passes)

The streaming policies (``cryoclass.stream.online``, ``cryoclass.stream.live``) are built from
the same steps.
"""
