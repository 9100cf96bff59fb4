"""What every hand task shares, without compiling a step: HandEnv.score (dense and
potential-based shaping by hand, the terms given) and the up-front check of object shapes."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import envs


def _grasp(shaping: str):
    return envs.make("grasp", **{"hand.shaping": shaping})


def _terms(reach, contact, lift, success):
    return {
        "reach": jnp.float32(reach),
        "contact": jnp.float32(contact),
        "lift": jnp.float32(lift),
        "success": jnp.float32(success),
        "action": jnp.float32(-0.1),
    }


def test_potential_shaping_pays_changes_and_telescopes():
    env = _grasp("potential")
    scales = env.config.reward
    potential = env.initial_potential()
    steps = [(0.2, 0.0, 0.0), (0.5, 0.5, 0.0), (0.9, 1.0, 0.4), (0.9, 1.0, 0.4)]
    paid = 0.0
    for i, (reach, contact, lift) in enumerate(steps):
        rewards, potential = env.score(
            _terms(reach, contact, lift, 0.0), scales, jnp.bool_(False), jnp.int32(i + 1), potential
        )
        paid += sum(float(rewards[k]) for k in env.shaping_terms)
        np.testing.assert_allclose(rewards["action"], -0.1 * scales.action, rtol=1e-6)
        np.testing.assert_allclose(rewards["success"], 0.0)
    final = 0.9 * scales.reach + 1.0 * scales.contact + 0.4 * scales.lift
    np.testing.assert_allclose(paid, final, rtol=1e-5)  # sum of changes = potential reached
    # Staying put pays nothing (the last step repeated the one before).
    assert sum(float(rewards[k]) for k in env.shaping_terms) == 0.0

    # Success ends the episode: the terms pay back what they hold, success pays its scale.
    rewards, _ = env.score(
        _terms(0.9, 1.0, 1.0, 1.0), scales, jnp.bool_(True), jnp.int32(5), potential
    )
    np.testing.assert_allclose(sum(float(rewards[k]) for k in env.shaping_terms), -final, rtol=1e-5)
    np.testing.assert_allclose(rewards["success"], scales.success)


def test_dense_shaping_pays_values_and_success_pays_the_rest():
    env = _grasp("dense")
    scales = env.config.reward
    t = 10
    rewards, potential = env.score(
        _terms(0.5, 1.0, 0.2, 1.0), scales, jnp.bool_(True), jnp.int32(t), env.initial_potential()
    )
    np.testing.assert_allclose(rewards["reach"], 0.5 * scales.reach, rtol=1e-6)
    np.testing.assert_allclose(rewards["lift"], 0.2 * scales.lift, rtol=1e-6)
    most = scales.reach + scales.contact + scales.lift
    left = env.config.episode_length - t
    np.testing.assert_allclose(rewards["success"], scales.success + left * most, rtol=1e-6)
    np.testing.assert_allclose(potential, [0.5 * scales.reach, scales.contact, 0.2 * scales.lift])


def test_object_shapes_mjx_cannot_collide_are_refused_up_front():
    """No compile: the check reads the model's contact pairs. A cylinder against the box palm
    and table has no MJX collision function; the message names the shapes that work."""
    import pytest

    with pytest.raises(ValueError, match=r"cylinder .* box, sphere, capsule$"):
        envs.make("grasp", **{"object.shape": "cylinder"})
    with pytest.raises(ValueError, match="ellipsoid"):
        envs.make("pick_place", **{"object.shape": "ellipsoid"})
    for shape in ("box", "sphere", "capsule"):
        envs.make("grasp", **{"object.shape": shape})


def test_placing_terms_are_staged_so_the_goal_pays_most():
    """No compile: ``place_terms`` by hand. Carrying the object into its goal never lowers the
    shaped reward, and placed + released is the only step paying the whole of it (the old terms
    paid more for hovering just outside the tolerance with the object in hand than for holding
    it on the goal, which RFS learnt on pick_place)."""
    from envs.place import PlaceRewardConfig, place_terms

    scales = PlaceRewardConfig()
    most = sum(getattr(scales, k) for k in envs.place.PlaceEnv.shaping_terms)
    tol = 0.03
    held = jnp.array([1.0, 1.0, 1.0, 1.0, 0.0])

    def paid(err, flags, placed, released, height=1.0):
        terms = place_terms(
            grasp_dist=jnp.float32(0.0),
            flags=flags,
            height=jnp.float32(height),
            err=jnp.asarray(err, jnp.float32),
            xy_tolerance=tol,
            placed=jnp.bool_(placed),
            released=jnp.bool_(released),
        )
        assert all(0.0 <= float(v) <= 1.0 for v in terms.values()), terms
        return sum(float(terms[k]) * getattr(scales, k) for k in terms)

    hover = paid([tol + 0.001, 0.0, 0.0], held, placed=False, released=False)
    above = paid([0.0, 0.0, 0.05], held, placed=False, released=False)
    on_goal_held = paid([0.0, 0.0, 0.0], held, placed=True, released=False, height=0.0)
    on_goal_released = paid([0.0, 0.0, 0.0], jnp.zeros(5), placed=True, released=True, height=0.0)
    assert hover < on_goal_held and above < on_goal_held, (hover, above, on_goal_held)
    assert on_goal_held < on_goal_released
    np.testing.assert_allclose(on_goal_released, most, rtol=1e-6)
