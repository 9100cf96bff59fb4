"""``rfs steer`` in a fresh process, for tests/test_sharding.py.

    python tests/scale_worker.py PARAMS.npz [rfs steer arguments ...]

JAX reads ``XLA_FLAGS`` (the CPU device count) and the ``JAX_*`` distributed settings only when
it starts, so the tests that change them run the command here, in a process of its own. After
the run, this process's copy of the learned params (steering head, then value network, as
``jax.tree.leaves`` orders them) is written to PARAMS.npz, so the test can compare what every
process ended with.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main(out: str, argv: list[str]) -> None:
    import jax
    import numpy as np

    import rfs_jax.agents.ppo as ppo
    from experiments import cli
    from rfs_jax import sharding

    captured = {}
    train = ppo.train

    def capturing_train(*args, **kwargs):
        state, history = train(*args, **kwargs)
        captured["state"] = state
        return state, history

    ppo.train = capturing_train  # experiments.steer imports it when the command runs
    cli.main(["steer", *argv])
    state = captured["state"]
    params = sharding.to_local((state.steering_params, state.value_params))
    np.savez(out, *[np.asarray(x) for x in jax.tree.leaves(params)])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
