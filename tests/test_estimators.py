"""Gradient estimators (reparam, STL, DReG) against their definitions, unbiasedness, and EMA."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vae_jax.inference import objectives
from vae_jax.models import vae as vae_lib
from vae_jax.run import training

X = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
MODELS = {
    "one_layer": vae_lib.VAE(input_shape=(3, 3, 1), hidden_widths=(5,), latent_dim=2, activation="tanh"),
    "two_layers": vae_lib.VAE(input_shape=(3, 3, 1), hidden_widths=(5,), latent_dim=3, activation="tanh",
                              upper_latent_dims=(2,), upper_hidden_widths=(2,)),
    "vampprior": vae_lib.VAE(input_shape=(3, 3, 1), hidden_widths=(5,), latent_dim=2, activation="tanh",
                             prior="vampprior", prior_components=3),
}
K = 4


def _definitions(model, params, key):
  """The IWAE gradients written out per sample: (reparam, STL, DReG), each a params pytree.

  log w_i(θ, φ_density, z_i(φ_path)); the path z_i(φ) is `model.sample_latents`.
  reparam: Σ_i w̃_i ∇ log w_i (every argument);  STL: the density's φ held fixed;
  DReG: as STL but the path term weighted w̃_i² instead of w̃_i.
  """
  stats_fn = lambda p: model.encode(p, X)

  def log_w(p_model, p_density, p_path, i):
    latent = model.sample_latents(p_path, stats_fn(p_path), jax.random.fold_in(key, i))
    log_px, log_pz = model.log_p(p_model, model.prior_params(p_model), X, latent)
    return log_px + log_pz - model.log_q(p_density, stats_fn(p_density), latent)

  values = jnp.stack([log_w(params, params, params, i) for i in range(K)])
  w = jax.nn.softmax(values)
  zero = jax.tree_util.tree_map(jnp.zeros_like, params)
  add = lambda a, b, s=1.0: jax.tree_util.tree_map(lambda u, v: u + s * v, a, b)
  reparam, stl, dreg = zero, zero, zero
  for i in range(K):
    g_model, g_density, g_path = jax.grad(log_w, argnums=(0, 1, 2))(params, params, params, i)
    reparam = add(reparam, add(add(g_model, g_density), g_path), w[i])
    stl = add(stl, add(g_model, g_path), w[i])
    dreg = add(add(dreg, g_model, w[i]), g_path, w[i] ** 2)
  return reparam, stl, dreg


@pytest.mark.parametrize("name", sorted(MODELS))
def test_iwae_estimators_equal_their_definitions(name):
  model = MODELS[name]
  params = model.init(jax.random.key(0))
  key = jax.random.key(1)
  expected = dict(zip(("reparam", "stl", "dreg"), _definitions(model, params, key)))
  for estimator in ("reparam", "stl", "dreg"):
    grads = jax.grad(lambda p: objectives.iwae_bound(model, p, X, key, K, estimator)[0])(params)
    for got, want in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(expected[estimator])):
      np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5, err_msg=f"{name} {estimator}")
  # The three really differ (else the test above could not tell them apart).
  leaves = lambda t: np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(t)])
  assert not np.allclose(leaves(expected["reparam"]), leaves(expected["stl"]), atol=1e-4)
  assert not np.allclose(leaves(expected["stl"]), leaves(expected["dreg"]), atol=1e-4)


def test_estimators_do_not_change_the_value():
  model = MODELS["two_layers"]
  params = model.init(jax.random.key(0))
  values = [objectives.iwae_bound(model, params, X, jax.random.key(2), K, e)[0] for e in ("reparam", "stl", "dreg")]
  np.testing.assert_allclose(values, values[0], rtol=1e-6)


def _mean_gradient_difference(model, params, fn_a, fn_b, num_keys):
  """Mean and standard error of ∇a − ∇b over `num_keys` keys (paired: the same samples)."""
  def difference(key):
    ga, gb = jax.grad(lambda p: fn_a(p, key))(params), jax.grad(lambda p: fn_b(p, key))(params)
    return jnp.concatenate([jnp.ravel(a - b) for a, b in zip(jax.tree_util.tree_leaves(ga),
                                                              jax.tree_util.tree_leaves(gb))])
  diffs = np.asarray(jax.jit(jax.vmap(difference))(jax.random.split(jax.random.key(3), num_keys)), np.float64)
  return diffs.mean(0), diffs.std(0, ddof=1) / math.sqrt(num_keys)


@pytest.mark.parametrize("name", ["one_layer", "two_layers"])
def test_dreg_is_unbiased_for_the_iwae_gradient(name):
  model = MODELS[name]
  params = model.init(jax.random.key(0))
  iwae = lambda estimator: (lambda p, key: objectives.iwae_bound(model, p, X, key, K, estimator)[0])
  mean, stderr = _mean_gradient_difference(model, params, iwae("dreg"), iwae("reparam"), 4000)
  moving = stderr > 0
  assert moving.sum() > 10
  assert np.all(np.abs(mean[moving]) < 5 * stderr[moving] + 1e-6)


def test_stl_is_unbiased_for_the_elbo_gradient_but_not_for_iwae():
  model = MODELS["one_layer"]
  params = model.init(jax.random.key(0))
  elbo = lambda estimator: (lambda p, key: objectives.elbo(
      model, p, X, key, analytic_kl=False, estimator=estimator)[0])
  mean, stderr = _mean_gradient_difference(model, params, elbo("stl"), elbo("reparam"), 4000)
  moving = stderr > 0
  assert np.all(np.abs(mean[moving]) < 5 * stderr[moving] + 1e-6)
  # For the IWAE bound STL drops a score term whose mean is not zero (Tucker et al. 2019).
  iwae = lambda estimator: (lambda p, key: objectives.iwae_bound(model, p, X, key, K, estimator)[0])
  mean, stderr = _mean_gradient_difference(model, params, iwae("stl"), iwae("reparam"), 4000)
  assert np.any(np.abs(mean) > 8 * stderr)


def test_parameter_average_follows_its_recursion_and_skips_dropped_updates():
  model = MODELS["one_layer"]
  optimizer = optax.adam(0.05)
  decay = 0.9
  state = training.init_state(model, optimizer, seed=0, ema=True)
  step = jax.jit(training.make_step_fn(model, optimizer, objective="elbo", ema_decay=decay))
  batch = jnp.tile(X, (4, 1))
  expected = state.params
  for t in range(3):
    state, _ = step(state, batch)
    expected = jax.tree_util.tree_map(lambda e, p: decay * e + (1 - decay) * p, expected, state.params)
  for got, want in zip(jax.tree_util.tree_leaves(state.ema_params), jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  assert not np.allclose(jax.tree_util.tree_leaves(state.ema_params)[0], jax.tree_util.tree_leaves(state.params)[0])
  assert training.eval_params(state) is state.ema_params
  bad, _ = step(state, batch.at[0, 0].set(jnp.nan))                 # a dropped update
  for got, want in zip(jax.tree_util.tree_leaves(bad.ema_params), jax.tree_util.tree_leaves(state.ema_params)):
    np.testing.assert_array_equal(got, want)
  plain = training.init_state(model, optimizer, seed=0)
  assert training.eval_params(plain) is plain.params
