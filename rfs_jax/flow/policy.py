"""Flow-matching base policy: parameters, the frozen sampler Des(s, a0), and the BC loss.

RFS (Su et al., arXiv 2602.01789, section 2 of /work/shared/RFS.md) pretrains a flow-matching
policy on demonstrations with the rectified straight path
    a_t = (1 - t) a0 + t a,   target a - a0,   t ~ U[0, 1],   a0 ~ N(0, I),
then freezes it. Its sampler integrates the velocity field from a0 with K Euler steps; the RL
modulation policy chooses a0 (input steering) and adds a residual to the output. The sampler
therefore takes a0 as an argument and never lets a gradient reach the frozen parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp

from rfs_jax.flow.config import FlowConfig
from rfs_jax.flow.networks import VelocityNet
from rfs_jax.types import Array, Metrics, Params, PRNGKey

# Floor on the normalisation std: a demonstration dimension that never moves (a locked finger,
# a constant flag) would otherwise be divided by ~0 and dominate the network input / loss.
STD_FLOOR = 1e-2
# Out-of-distribution RL states can sit many stds away from the demos; clipping the normalised
# observation keeps the frozen net's inputs in a range it has seen the like of.
OBS_CLIP = 10.0

# velocity_fn(a_t [B,H,A], t [B], obs_n [B,O]) -> v [B,H,A], all in normalised units.
VelocityFn = Callable[[Array, Array, Array], Array]


@flax.struct.dataclass
class FlowParams:
    """Everything the frozen base policy needs at inference.

    net: the velocity network's Flax params; obs_mean, obs_std [O]; act_mean, act_std [A]
    (normalisation statistics of the demonstrations, std floored at ``STD_FLOOR``).
    """

    net: Params
    obs_mean: Array
    obs_std: Array
    act_mean: Array
    act_std: Array


def make_velocity_net(cfg: FlowConfig, action_size: int) -> VelocityNet:
    return VelocityNet(
        hidden=cfg.hidden,
        time_embed_dim=cfg.time_embed_dim,
        horizon=cfg.horizon,
        action_size=action_size,
        layer_norm=cfg.layer_norm,
    )


def init_flow_params(cfg: FlowConfig, obs_size: int, action_size: int, key: PRNGKey) -> FlowParams:
    """Fresh network params with identity normalisation (mean 0, std 1)."""
    net = make_velocity_net(cfg, action_size)
    net_params = net.init(
        key,
        jnp.zeros((1, cfg.horizon, action_size)),
        jnp.zeros((1,)),
        jnp.zeros((1, obs_size)),
    )
    return FlowParams(
        net=net_params,
        obs_mean=jnp.zeros((obs_size,)),
        obs_std=jnp.ones((obs_size,)),
        act_mean=jnp.zeros((action_size,)),
        act_std=jnp.ones((action_size,)),
    )


def normalize_obs(params: FlowParams, obs: Array) -> Array:
    """obs [..., O] -> clipped standardised obs [..., O]; shared by training and sampling."""
    return jnp.clip((obs - params.obs_mean) / params.obs_std, -OBS_CLIP, OBS_CLIP)


def euler_integrate(velocity_fn: VelocityFn, a0: Array, obs_n: Array, num_steps: int) -> Array:
    """K explicit Euler steps of da/dt = v(a, t, obs) from t = 0 to t = 1.

    a0 [B, H, A], obs_n [B, O] -> a_1 [B, H, A]. K is static, so the loop unrolls (fql style);
    K is small and unrolling lets XLA fuse across steps.
    """
    dt = 1.0 / num_steps
    a = a0
    for k in range(num_steps):
        t = jnp.full((a0.shape[0],), k * dt, dtype=a0.dtype)
        a = a + dt * velocity_fn(a, t, obs_n)
    return a


def make_sampler(
    cfg: FlowConfig,
    obs_size: int,
    action_size: int,
    velocity_apply: Callable[[Params, Array, Array, Array], Array] | None = None,
) -> Callable[[FlowParams, Array, Array], Array]:
    """Build the frozen sampler Des(s, a0).

    Returns ``sample(params, obs [B, O], a0 [B, H, A]) -> actions [B, H, A]``, a pure function
    (jit it, or call it inside jitted RL code). a0 ~ N(0, I) reproduces the plain base policy;
    a learned a0 steers it. ``velocity_apply(net_params, a_t, t, obs_n)`` replaces the network
    (tests use it to plug in fields with closed-form flows).
    """
    if velocity_apply is None:
        velocity_apply = make_velocity_net(cfg, action_size).apply
    chunk_shape = (cfg.horizon, action_size)

    def sample(params: FlowParams, obs: Array, a0: Array) -> Array:
        if obs.shape[-1] != obs_size or a0.shape[-2:] != chunk_shape:
            raise ValueError(
                f"sample expects obs [B, {obs_size}] and a0 [B, {cfg.horizon}, {action_size}], "
                f"got obs {obs.shape} and a0 {a0.shape}"
            )
        # The base policy is frozen: whatever differentiates through the sampler (an RL loss,
        # a distillation loss) must not move it.
        params = jax.lax.stop_gradient(params)
        obs_n = normalize_obs(params, obs)
        a1_n = euler_integrate(
            lambda a_t, t, o: velocity_apply(params.net, a_t, t, o), a0, obs_n, cfg.num_steps
        )
        actions = a1_n * params.act_std + params.act_mean
        # Demonstrations live in the env's [-1, 1] action box; overshoot of the ODE is clipped.
        return jnp.clip(actions, -1.0, 1.0)

    return sample


def velocity_matching_loss(
    velocity_fn: VelocityFn, obs_n: Array, act_n: Array, key: PRNGKey
) -> tuple[Array, Metrics]:
    """Rectified-flow loss of an arbitrary velocity function.

    obs_n [B, O], act_n [B, H, A] (normalised). Loss is the mean over batch and chunk entries of
    (v(a_t, t, s) - (a - a0))^2 with a_t = (1 - t) a0 + t a. It is exactly 0 for the true
    velocity of a single target point, (a - a_t) / (1 - t), which tests use as an oracle.
    """
    key_t, key_noise = jax.random.split(key)
    batch = act_n.shape[0]
    t = jax.random.uniform(key_t, (batch,), dtype=act_n.dtype)
    a0 = jax.random.normal(key_noise, act_n.shape, dtype=act_n.dtype)
    tb = t[:, None, None]
    a_t = (1.0 - tb) * a0 + tb * act_n
    target = act_n - a0
    v = velocity_fn(a_t, t, obs_n)
    loss = jnp.mean(jnp.square(v - target))
    metrics = {
        "flow/loss": loss,
        "flow/v_rms": jnp.sqrt(jnp.mean(jnp.square(v))),
        "flow/target_rms": jnp.sqrt(jnp.mean(jnp.square(target))),
    }
    return loss, metrics


def flow_matching_loss(
    net_apply: Callable[..., Array],
    net_params: Params,
    obs_n: Array,
    act_n: Array,
    key: PRNGKey,
) -> tuple[Array, Metrics]:
    """Flow-matching BC loss of the network. obs_n [B, O], act_n [B, H, A] -> (loss, metrics)."""
    return velocity_matching_loss(
        lambda a_t, t, o: net_apply(net_params, a_t, t, o), obs_n, act_n, key
    )
