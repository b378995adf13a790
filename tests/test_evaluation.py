"""The importance-sampled log-likelihood and the test-set evaluation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.inference import evaluation
from vae_jax.inference import objectives
from vae_jax.models import vae as vae_lib

MODEL = vae_lib.VAE(input_shape=(4, 4, 1), hidden_widths=(8,), latent_dim=2)


@pytest.fixture(scope="module")
def setup():
  params = MODEL.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  images = (rng.uniform(size=(10, 16)) < 0.4).astype(np.float32)
  return params, images


def test_chunked_estimate_equals_the_unchunked_one(setup):
  params, images = setup
  x, key = jnp.asarray(images[0]), jax.random.key(1)

  @jax.jit
  def run(x):
    log_w = objectives.importance_log_weights(MODEL, params, x, key, jnp.arange(50))
    unchunked = jax.nn.logsumexp(log_w) - math.log(50)
    chunked = [evaluation.log_likelihood_estimate(MODEL, params, x, key, 50, chunk)
               for chunk in (7, 10, 50, 80)]     # 7: a padded last chunk; 80: clamped to 50
    return unchunked, chunked, objectives.iwae_bound(MODEL, params, x, key, 50)[0]

  unchunked, chunked, iwae = run(x)
  for value in chunked:
    np.testing.assert_allclose(value, unchunked, rtol=1e-6)
  np.testing.assert_allclose(iwae, unchunked, rtol=1e-6)


def test_estimate_is_above_the_elbo(setup):
  params, images = setup
  keys = jax.random.split(jax.random.key(2), images.shape[0])

  @jax.jit
  @jax.vmap
  def run(x, key):
    elbo_key, is_key = jax.random.split(key)
    return (objectives.elbo(MODEL, params, x, elbo_key)[1]["elbo"],
            evaluation.log_likelihood_estimate(MODEL, params, x, is_key, 200, 50))

  elbo, log_px = run(jnp.asarray(images), keys)
  assert float(elbo.mean()) < float(log_px.mean())


def test_evaluate_matches_per_example_computation(setup, monkeypatch):
  params, images = setup
  key = jax.random.key(3)
  # 24 (example, sample) pairs per step with chunks of 8: batches of 4 examples
  # are estimated 3 + 1 at a time, exercising the grouping's remainder.
  monkeypatch.setattr(evaluation, "_SAMPLES_PER_STEP", 24)
  evaluation._evaluate_batch.clear_cache()
  scores = evaluation.evaluate(MODEL, params, images, key, batch_size=4, num_samples=20,
                               chunk_size=8)

  @jax.jit
  @jax.vmap
  def per_example(x, n):
    elbo_key, is_key = jax.random.split(jax.random.fold_in(key, n))
    _, metrics = objectives.elbo(MODEL, params, x, elbo_key)
    return metrics, evaluation.log_likelihood_estimate(MODEL, params, x, is_key, 20, 8)

  metrics, log_px = per_example(jnp.asarray(images), jnp.arange(10))
  neg_elbo, nll = -np.asarray(metrics["elbo"], np.float64), -np.asarray(log_px, np.float64)
  np.testing.assert_allclose(scores["neg_elbo"], neg_elbo.mean(), rtol=1e-5)
  np.testing.assert_allclose(scores["neg_elbo_stderr"], neg_elbo.std(ddof=1) / math.sqrt(10),
                             rtol=1e-4)
  np.testing.assert_allclose(scores["recon"], np.mean(metrics["recon"]), rtol=1e-5)
  np.testing.assert_allclose(scores["kl"], np.mean(metrics["kl"]), rtol=1e-5)
  np.testing.assert_allclose(scores["nll"], nll.mean(), rtol=1e-5)
  np.testing.assert_allclose(scores["nll_stderr"], nll.std(ddof=1) / math.sqrt(10), rtol=1e-4)
  assert scores["num_examples"] == 10
  assert all(isinstance(value, (int, float)) for value in scores.values())


def test_evaluate_compiles_once_and_ignores_the_batch_size(setup):
  params, images = setup
  key = jax.random.key(4)
  evaluation._evaluate_batch.clear_cache()
  # 10 images in batches of 4: 4 + 4 + 2 (padded to 4), one compilation.
  by_four = evaluation.evaluate(MODEL, params, images, key, batch_size=4)
  assert evaluation._evaluate_batch._cache_size() == 1
  by_ten = evaluation.evaluate(MODEL, params, images, key, batch_size=10)
  for name in ("neg_elbo", "recon", "kl"):
    np.testing.assert_allclose(by_four[name], by_ten[name], rtol=1e-5)
  assert set(by_four) == {"num_examples", "neg_elbo", "neg_elbo_stderr", "recon", "kl"}


def test_evaluate_deterministic_autoencoder(setup):
  _, images = setup
  model = vae_lib.VAE(input_shape=(4, 4, 1), hidden_widths=(8,), latent_dim=2, stochastic=False)
  params = model.init(jax.random.key(5))
  scores = evaluation.evaluate(model, params, images, jax.random.key(6), batch_size=3)
  expected = jax.jit(jax.vmap(lambda x: objectives.autoencoder_loss(model, params, x)[0]))(
      jnp.asarray(images))
  np.testing.assert_allclose(scores["neg_recon"], -np.mean(expected), rtol=1e-5)
  assert set(scores) == {"num_examples", "neg_recon", "neg_recon_stderr", "recon"}
  with pytest.raises(ValueError, match="no log p\\(x\\) estimate"):
    evaluation.evaluate(model, params, images, jax.random.key(6), num_samples=10)


@pytest.mark.parametrize("images,kwargs,message", [
    (np.zeros((3, 15)), {}, r"images must be \[N, 16\]"),
    (np.zeros((0, 16)), {}, r"images is empty"),
    (np.zeros((3, 16)), dict(num_samples=0), r"num_samples must be None or an int ≥ 1"),
    (np.zeros((3, 16)), dict(chunk_size=0), r"chunk_size must be an int ≥ 1"),
    (np.zeros((3, 16)), dict(batch_size=0), r"batch_size must be an int ≥ 1"),
])
def test_evaluate_rejects(setup, images, kwargs, message):
  params, _ = setup
  with pytest.raises(ValueError, match=message):
    evaluation.evaluate(MODEL, params, images, jax.random.key(0), **kwargs)
