"""Pure-JAX probe environments with known answers (rejax-style), single-instance brax Envs.

- ``ConstantRewardEnv``: reward 1 every step, never terminates, noise observations. With
  time-outs bootstrapped the value of every state is the infinite-horizon one; with ``gamma``
  per decision of H_exec steps (plain reward sum per chunk) that is ``H_exec / (1 - gamma)``.
- ``ObsDependentRewardEnv``: a random sign in the observation, reward equal to it, one step,
  then termination: ``V(obs) = obs``.
- ``BimodalGoalEnv``: the RFS probe (arXiv 2602.01789's claim in two dimensions). The demos go
  to one of two goals at random; the reward wants the goal named by a cue the demos ignore, and
  a point offset from it, off the demos' support. Choosing the goal needs latent steering (the
  base policy's mode is set by its noise a0), reaching the offset needs the residual, so RFS
  solves it while DSRL and residual RL alone cannot.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.base import Env, State

# envs sit below the library: the aliases rfs_jax.types has, without importing it.
Array = jax.Array
PRNGKey = jax.Array


class _ProbeEnv(Env):
    @property
    def backend(self) -> str:
        return "jax"


class ConstantRewardEnv(_ProbeEnv):
    """Reward 1 every step, no termination; the observation is fresh uniform noise.

    The noise gives a value network live inputs while leaving the right answer the same for
    every observation.
    """

    def __init__(self, obs_size: int = 1, action_size: int = 2):
        self._obs_size, self._action_size = obs_size, action_size

    @property
    def observation_size(self) -> int:
        return self._obs_size

    @property
    def action_size(self) -> int:
        return self._action_size

    def _noise(self, key: PRNGKey) -> Array:
        return jax.random.uniform(key, (self._obs_size,), minval=-1.0, maxval=1.0)

    def reset(self, rng: PRNGKey) -> State:
        key, key_obs = jax.random.split(rng)
        zero = jnp.zeros(())
        return State(
            pipeline_state=None,
            obs=self._noise(key_obs),
            reward=zero,
            done=zero,
            metrics={"success": zero, "reward/constant": zero},
            info={"key": key},
        )

    def step(self, state: State, action: Array) -> State:
        key, key_obs = jax.random.split(state.info["key"])
        one = jnp.ones(())
        return state.replace(
            obs=self._noise(key_obs),
            reward=one,
            done=jnp.zeros(()),
            metrics={"success": jnp.zeros(()), "reward/constant": one},
            info={**state.info, "key": key},
        )


class ObsDependentRewardEnv(_ProbeEnv):
    """Observation ``[s]`` with ``s = +-1`` at random; reward ``s``; terminates after one step."""

    def __init__(self, action_size: int = 2):
        self._action_size = action_size

    @property
    def observation_size(self) -> int:
        return 1

    @property
    def action_size(self) -> int:
        return self._action_size

    def reset(self, rng: PRNGKey) -> State:
        sign = jnp.where(jax.random.bernoulli(rng), 1.0, -1.0)
        zero = jnp.zeros(())
        return State(
            pipeline_state=None,
            obs=sign[None],
            reward=zero,
            done=zero,
            metrics={"success": zero, "reward/sign": zero},
        )

    def step(self, state: State, action: Array) -> State:
        reward = state.obs[0]
        return state.replace(
            reward=reward,
            done=jnp.ones(()),
            metrics={"success": (reward > 0).astype(jnp.float32), "reward/sign": reward},
            info=dict(state.info),
        )


@dataclasses.dataclass(frozen=True)
class BimodalGoalConfig:
    """The bimodal-goal probe's geometry, and its time limit when run as a task."""

    goal: float = 0.6
    """The two demonstrated goals are ``(+-goal, 0)``."""
    offset: tuple[float, float] = (0.0, 0.15)
    """The rewarded target is the cued goal plus this (off the demos' support)."""
    tolerance: float = 0.05
    """Success radius around the target; below ``|offset|``."""
    num_steps: int = 2
    """The env terminates after this many steps."""
    start_noise: float = 0.05
    """Half-range of the uniform start position around the origin."""
    demo_noise: tuple[float, float] = (0.03, 0.01)
    """Std of the demonstrations' action noise (along x, along y)."""
    episode_length: int = 4
    """Time limit of the batched env (``envs.wrappers.wrap``); the env ends itself sooner."""

    def __post_init__(self):
        object.__setattr__(self, "offset", tuple(float(x) for x in self.offset))
        object.__setattr__(self, "demo_noise", tuple(float(x) for x in self.demo_noise))
        offset_norm = float(np.hypot(*self.offset))
        if not 0 < self.tolerance < offset_norm:
            raise ValueError(
                f"tolerance must lie in (0, |offset|) = (0, {offset_norm:.3f}), "
                f"got {self.tolerance}"
            )
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {self.episode_length}")


class BimodalGoalEnv(_ProbeEnv):
    """A point in the plane; the action ``[-1, 1]^2`` is where it goes next.

    Observation ``[x, y, cue]``: the start position is near the origin and ``cue = +-1`` names
    the rewarded goal ``(cue * goal, 0)``. The target is that goal plus ``offset``, which is
    perpendicular to the goals' axis (along y). The demonstrations (``demo_episodes``) go to
    either goal at random, ignoring the cue, with noise ``demo_noise = (along x, along y)``;
    the y noise is tiny, so the base policy's y output varies by only a few times it for any
    bounded noise a0 (its action normalisation divides by that std), far short of the offset.
    Success: within ``tolerance`` (< ``|offset|``) of the target. Rewards: ``distance`` (minus
    the distance to the target) and ``success`` (1 on success). The episode terminates after
    ``num_steps`` steps. Built from a ``BimodalGoalConfig`` and/or its field names as keywords.
    """

    def __init__(self, config: BimodalGoalConfig | None = None, **overrides):
        config = dataclasses.replace(config or BimodalGoalConfig(), **overrides)
        self.config = config
        self.goal = config.goal
        self.offset = tuple(config.offset)
        self.tolerance = config.tolerance
        self.num_steps = config.num_steps
        self.start_noise = config.start_noise
        self.demo_noise = tuple(config.demo_noise)

    @property
    def observation_size(self) -> int:
        return 3

    @property
    def action_size(self) -> int:
        return 2

    def target(self, obs: Array) -> Array:
        """``[..., 3] -> [..., 2]`` the rewarded point for an observation."""
        goal = obs[..., 2:3] * jnp.asarray([self.goal, 0.0])
        return goal + jnp.asarray(self.offset)

    def reset(self, rng: PRNGKey) -> State:
        key_pos, key_cue = jax.random.split(rng)
        pos = jax.random.uniform(key_pos, (2,), minval=-self.start_noise, maxval=self.start_noise)
        cue = jnp.where(jax.random.bernoulli(key_cue), 1.0, -1.0)
        zero = jnp.zeros(())
        return State(
            pipeline_state=None,
            obs=jnp.concatenate([pos, cue[None]]),
            reward=zero,
            done=zero,
            metrics={"success": zero, "reward/distance": zero, "reward/success": zero},
            info={"t": zero},
        )

    def step(self, state: State, action: Array) -> State:
        pos = jnp.clip(action, -1.0, 1.0)
        distance = jnp.linalg.norm(pos - self.target(state.obs))
        success = (distance < self.tolerance).astype(jnp.float32)
        t = state.info["t"] + 1.0
        terms = {"reward/distance": -distance, "reward/success": success}
        return state.replace(
            obs=jnp.concatenate([pos, state.obs[2:]]),
            reward=terms["reward/distance"] + terms["reward/success"],
            done=(t >= self.num_steps).astype(jnp.float32),
            metrics={"success": success, **terms},
            info={**state.info, "t": t},
        )

    def demo_episodes(self, key: PRNGKey, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """``n`` demonstrations ``(obs [T, 3], actions [T, 2])`` of the bimodal demonstrator.

        Each picks one goal ``(+-goal, 0)`` at random, independent of the cue, and commands it
        at every step, plus Gaussian noise of std ``demo_noise`` per axis.
        """
        steps = self.num_steps

        def episode(key):
            key_reset, key_side, key_noise = jax.random.split(key, 3)
            side = jnp.where(jax.random.bernoulli(key_side), 1.0, -1.0)
            noise = jnp.asarray(self.demo_noise) * jax.random.normal(key_noise, (steps, 2))
            actions = jnp.clip(jnp.asarray([side * self.goal, 0.0]) + noise, -1.0, 1.0)

            def body(state, action):
                return self.step(state, action), state.obs

            _, obs = jax.lax.scan(body, self.reset(key_reset), actions)
            return obs, actions

        obs, actions = jax.device_get(jax.jit(jax.vmap(episode))(jax.random.split(key, n)))
        return [(np.asarray(obs[i]), np.asarray(actions[i])) for i in range(n)]


# Probe envs that the command line accepts as a ``task`` (tests run ``rfs steer`` on them). They
# live apart from ``envs.tasks()``, which means the MJX hand tasks: each entry is the env class
# and its default config, like ``envs.register``'s arguments.
PROBES: dict[str, tuple[type[Env], Any]] = {
    "probe_bimodal": (BimodalGoalEnv, BimodalGoalConfig()),
}
