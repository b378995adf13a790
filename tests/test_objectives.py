"""ELBO, IWAE bound, AE loss and batch loss: identities, bounds and gradients."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.nn import autoencoders
from vae_jax.models import distributions
from vae_jax.inference import objectives
from vae_jax.models import vae as vae_lib

# tanh keeps the objectives smooth for the finite-difference checks.
MODEL = vae_lib.VAE(input_shape=(4, 4, 1), hidden_widths=(8,), latent_dim=2, activation="tanh")


@pytest.fixture(scope="module")
def setup():
  params = MODEL.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = jnp.asarray(rng.uniform(size=(12, 16)) < 0.4, jnp.float32)
  return params, batch


def test_elbo_is_recon_minus_beta_kl(setup):
  params, batch = setup
  x, key = batch[0], jax.random.key(1)

  @jax.jit
  def run(params, x, key):
    mu, log_var = MODEL.encode(params, x)
    z = MODEL.reparameterize(jax.random.fold_in(key, 0), mu, log_var)
    recon = MODEL.log_likelihood(params, x, MODEL.decode(params, z))
    kl = distributions.gaussian_kl_to_standard(mu, log_var)
    return objectives.elbo(MODEL, params, x, key, beta=0.3), recon, kl

  (value, metrics), recon, kl = run(params, x, key)
  np.testing.assert_allclose(metrics["recon"], recon, rtol=1e-6)
  np.testing.assert_allclose(metrics["kl"], kl, rtol=1e-6)
  np.testing.assert_allclose(metrics["elbo"], recon - kl, rtol=1e-6)
  np.testing.assert_allclose(value, recon - 0.3 * kl, rtol=1e-6)


def test_iwae_with_one_sample_is_exactly_the_sampled_kl_elbo(setup):
  params, batch = setup
  keys = jax.random.split(jax.random.key(10), batch.shape[0])
  iwae = jax.jit(jax.vmap(lambda x, k: objectives.iwae_bound(MODEL, params, x, k, 1)[0]))
  elbo = jax.jit(jax.vmap(lambda x, k: objectives.elbo(
      MODEL, params, x, k, beta=1.0, analytic_kl=False)))
  bounds = iwae(batch, keys)
  values, metrics = elbo(batch, keys)
  np.testing.assert_allclose(bounds, values, rtol=1e-6)
  np.testing.assert_allclose(bounds, metrics["elbo"], rtol=1e-6)


def test_sampled_and_analytic_kl_elbo_agree_in_expectation(setup):
  params, batch = setup
  x = batch[1]
  keys = jax.random.split(jax.random.key(2), 4000)

  @jax.jit
  @jax.vmap
  def difference(key):
    sampled, _ = objectives.elbo(MODEL, params, x, key, analytic_kl=False)
    analytic, _ = objectives.elbo(MODEL, params, x, key, analytic_kl=True)
    return sampled - analytic

  difference = difference(keys)
  assert abs(float(difference.mean())) < 4 * float(difference.std()) / math.sqrt(keys.shape[0])


def test_iwae_bound_increases_with_k_on_average(setup):
  # Sample k uses fold_in(key, k), so L_1, L_10, L_100 are computed from the first
  # 1, 10, 100 of the same 100 log-weights (checked against iwae_bound below).
  params, batch = setup
  keys = jax.random.split(jax.random.key(3), 8)

  @jax.jit
  def run(batch, keys):
    def log_weights(x, key):
      return objectives.importance_log_weights(MODEL, params, x, key, jnp.arange(100))
    log_w = jax.vmap(jax.vmap(log_weights, (None, 0)), (0, None))(batch, keys)  # [12, 8, 100]
    bounds = [jnp.mean(jax.nn.logsumexp(log_w[..., :k], axis=-1) - math.log(k))
              for k in (1, 10, 100)]
    elbo = jax.vmap(lambda key: objectives.batch_loss(
        MODEL, params, batch, key, objective="elbo")[1]["elbo"])(keys).mean()
    direct, _ = objectives.iwae_bound(MODEL, params, batch[0], keys[0], 10)
    return bounds, elbo, direct, jax.nn.logsumexp(log_w[0, 0, :10]) - math.log(10)

  bounds, elbo, direct, expected = run(batch, keys)
  assert elbo < bounds[1] < bounds[2]
  assert bounds[0] < bounds[1] < bounds[2]
  np.testing.assert_allclose(direct, expected, rtol=1e-6)


def _finite_difference_check(fn, params, direction, eps=1e-5):
  """⟨∇f_i(θ), v⟩ (reverse mode) against (f_i(θ + εv) − f_i(θ − εv)) / 2ε for each i."""
  plus = jax.tree_util.tree_map(lambda p, v: p + eps * v, params, direction)
  minus = jax.tree_util.tree_map(lambda p, v: p - eps * v, params, direction)
  numeric = (fn(plus) - fn(minus)) / (2 * eps)
  jacobian = jax.jit(jax.jacrev(fn))(params)
  analytic = sum(jnp.tensordot(j, v, axes=v.ndim) for j, v in zip(
      jax.tree_util.tree_leaves(jacobian), jax.tree_util.tree_leaves(direction)))
  np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian_learned", "continuous_bernoulli"])
def test_gradients_through_the_reparameterisation_match_finite_differences(setup, likelihood):
  params, batch = setup
  model = dataclasses.replace(MODEL, likelihood=likelihood)
  with jax.enable_x64(True):
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    if likelihood == "gaussian_learned":
      params = dict(params, log_scale=jnp.linspace(-1.0, 0.5, 16))
    leaves, tree = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(5)
    direction = jax.tree_util.tree_unflatten(
        tree, [jnp.asarray(rng.normal(size=leaf.shape)) for leaf in leaves])
    x = jnp.asarray(batch[2], jnp.float64)
    key = jax.random.key(6)
    both = jax.jit(lambda p: jnp.stack([
        objectives.elbo(model, p, x, key, beta=0.7, num_samples=2)[0],
        objectives.iwae_bound(model, p, x, key, 3)[0]]))
    _finite_difference_check(both, params, direction)
  assert jnp.zeros(1).dtype == jnp.float32  # x64 switched off again


def test_reparameterisation_derivatives():
  # ∂z/∂μ = I and ∂z/∂log σ² = diag(½ σ ⊙ ε) for z = μ + σ ⊙ ε.
  key = jax.random.key(6)
  mu, log_var = jnp.array([0.3, -1.0]), jnp.array([0.2, -0.4])

  @jax.jit
  def run(mu, log_var):
    epsilon = (vae_lib.VAE.reparameterize(key, mu, log_var) - mu) * jnp.exp(-0.5 * log_var)
    jacobians = jax.jacobian(vae_lib.VAE.reparameterize, argnums=(1, 2))(key, mu, log_var)
    return epsilon, jacobians

  epsilon, (jac_mu, jac_log_var) = run(mu, log_var)
  np.testing.assert_allclose(jac_mu, np.eye(2), atol=1e-6)
  np.testing.assert_allclose(jac_log_var, np.diag(0.5 * jnp.exp(0.5 * log_var) * epsilon),
                             rtol=1e-5)


def test_autoencoder_loss_is_the_scaled_squared_error():
  model = vae_lib.VAE(input_shape=(4, 4, 1), hidden_widths=(8,), latent_dim=2,
                      likelihood="gaussian", gaussian_scale=0.2, stochastic=False)
  params = model.init(jax.random.key(7))
  x = jax.random.uniform(jax.random.key(8), (16,))
  value, metrics = objectives.autoencoder_loss(model, params, x)
  squared_error = autoencoders.reconstruction_error(params, x)   # ‖x − g(f(x))‖² (Ch. 2)
  expected = -squared_error / (2 * 0.2 ** 2) - 16 * math.log(0.2) - 8 * math.log(2 * math.pi)
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  assert float(metrics["kl"]) == 0.0
  with pytest.raises(ValueError, match="set model.stochastic=False"):
    objectives.autoencoder_loss(MODEL, params, x)
  with pytest.raises(ValueError, match="needs a VAE"):
    objectives.elbo(model, params, x, jax.random.key(0))


def test_kl_warmup():
  values = [float(objectives.kl_warmup(step, 10)) for step in (0, 5, 10, 20)]
  assert values == [0.0, 0.5, 1.0, 1.0]
  assert float(objectives.kl_warmup(3, 0)) == 1.0
  assert float(jax.jit(objectives.kl_warmup, static_argnums=1)(jnp.int32(4), 8)) == 0.5
  with pytest.raises(ValueError, match="warmup_steps must be ≥ 0"):
    objectives.kl_warmup(0, -1)


def test_batch_loss_is_minus_the_mean_objective(setup):
  params, batch = setup
  key = jax.random.key(9)
  loss, metrics = jax.jit(lambda p, b, k: objectives.batch_loss(
      MODEL, p, b, k, objective="elbo", beta=0.5))(params, batch, key)
  keys = jax.random.split(key, batch.shape[0])
  one = jax.jit(lambda x, k: objectives.elbo(MODEL, params, x, k, beta=0.5))
  per_example = [one(x, k) for x, k in zip(batch, keys)]
  np.testing.assert_allclose(loss, -np.mean([v for v, _ in per_example]), rtol=1e-5)
  assert set(metrics) == {"loss", "recon", "kl", "elbo"}
  np.testing.assert_allclose(metrics["kl"], np.mean([m["kl"] for _, m in per_example]), rtol=1e-5)
  np.testing.assert_allclose(metrics["loss"], loss)
  _, iwae_metrics = jax.jit(lambda p, b, k: objectives.batch_loss(
      MODEL, p, b, k, objective="iwae", num_samples=3))(params, batch, key)
  assert set(iwae_metrics) == {"loss", "recon", "kl", "elbo", "iwae_bound"}
  np.testing.assert_allclose(iwae_metrics["loss"], -iwae_metrics["iwae_bound"], rtol=1e-6)


def test_batch_loss_beta_can_be_traced_and_vmapped(setup):
  params, batch = setup
  key = jax.random.key(11)
  betas = jnp.array([0.0, 1.0, 4.0])
  losses, metrics = jax.jit(jax.vmap(lambda beta: objectives.batch_loss(
      MODEL, params, batch, key, objective="elbo", beta=beta)))(betas)
  np.testing.assert_allclose(losses, -metrics["recon"] + betas * metrics["kl"], rtol=1e-5)
  np.testing.assert_allclose(losses[0], -metrics["recon"][0], rtol=1e-6)


def test_batch_loss_ae(setup):
  _, batch = setup
  model = vae_lib.VAE(input_shape=(4, 4, 1), hidden_widths=(8,), latent_dim=2, stochastic=False)
  params = model.init(jax.random.key(12))
  loss, metrics = jax.jit(lambda p, b: objectives.batch_loss(
      model, p, b, jax.random.key(0), objective="ae"))(params, batch)
  one = jax.jit(lambda x: objectives.autoencoder_loss(model, params, x)[0])
  expected = np.mean([one(x) for x in batch])
  np.testing.assert_allclose(loss, -expected, rtol=1e-5)
  assert set(metrics) == {"loss", "recon", "kl"}


@pytest.mark.parametrize("kwargs,message", [
    (dict(objective="vae"), r"objective='vae' is unknown; choose one of elbo, iwae, ae"),
    (dict(objective="iwae", num_samples=0), r"num_samples must be a Python int ≥ 1, got 0"),
    (dict(objective="elbo", beta=-0.5), r"beta must be ≥ 0, got -0.5"),
    (dict(objective="ae"), r"set model.stochastic=False"),
])
def test_batch_loss_rejects(setup, kwargs, message):
  params, batch = setup
  with pytest.raises(ValueError, match=message):
    objectives.batch_loss(MODEL, params, batch, jax.random.key(0), **kwargs)
