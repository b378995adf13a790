"""The VAE spec: validation, parameter layout, encoder/decoder, likelihoods."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import special, stats

from vae_jax.nn import autoencoders
from vae_jax.models import distributions
from vae_jax.nn import networks
from vae_jax.models import vae as vae_lib

SMALL = dict(input_shape=(4, 4, 1), hidden_widths=(8,), latent_dim=3)


def _config(**fields):
  defaults = dict(architecture="mlp", hidden_widths=(8,), latent_dim=3, activation="relu",
                  likelihood="bernoulli", gaussian_scale=0.1, conv_channels=(2, 4))
  return ml_collections.ConfigDict(dict(defaults, **fields))


def test_from_config_builds_the_model():
  model = vae_lib.VAE.from_config(_config(likelihood="continuous_bernoulli"), (4, 4, 1))
  assert model == vae_lib.VAE(input_shape=(4, 4, 1), hidden_widths=(8,), latent_dim=3,
                              likelihood="continuous_bernoulli", conv_channels=(2, 4))
  assert model.encoder_widths == (16, 8, 6) and model.decoder_widths == (3, 8, 16)
  # Lists (e.g. from a command-line override) become tuples: the spec stays hashable.
  model = vae_lib.VAE.from_config(_config(hidden_widths=[8, 8]), [4, 4, 1])
  assert model.hidden_widths == (8, 8) and model.input_shape == (4, 4, 1)
  hash(model)


@pytest.mark.parametrize("fields,message", [
    (dict(hidden_widths=(8, 12)), r"Lemma 2\.1\.1.*d_3=12 follows d_2=8"),
    (dict(hidden_widths=(32,)), r"Lemma 2\.1\.1.*\(16, 32, 3\)"),
    (dict(latent_dim=10), r"latent_dim=10.*Lemma 2\.1\.1"),
    (dict(latent_dim=0), r"model\.latent_dim must be an integer ≥ 1, got 0"),
    (dict(latent_dim=2.5), r"model\.latent_dim"),
    (dict(hidden_widths=(8, 0)), r"model\.hidden_widths must hold positive integers"),
    (dict(likelihood="poisson"),
     r"model\.likelihood='poisson' is unknown; choose one of bernoulli, gaussian, "
     r"gaussian_learned, continuous_bernoulli"),
    (dict(architecture="rnn"), r"model\.architecture='rnn' is unknown; choose one of mlp, conv"),
    (dict(activation="swish2"), r"model\.activation='swish2' is invalid: unknown activation"),
    (dict(gaussian_scale=0.0), r"model\.gaussian_scale must be a finite number > 0"),
    (dict(architecture="conv", conv_channels=(2, 4, 8)), r"divisible by 8"),
    (dict(latent_dims=3), r"unknown field\(s\) latent_dims; valid fields:"),
])
def test_from_config_rejects(fields, message):
  with pytest.raises(ValueError, match=message) as error:
    vae_lib.VAE.from_config(_config(**fields), (4, 4, 1))
  assert "\n" not in str(error.value)


def test_the_encoder_head_is_checked_per_head_not_on_2d():
  # With latent 5 the last layer has 2·5 = 10 > 8 outputs, but it is two heads
  # 8 → 5 and each head's widths (16, 8, 5) satisfy Lemma 2.1.1.
  model = vae_lib.VAE(input_shape=(4, 4, 1), hidden_widths=(8,), latent_dim=5)
  assert model.encoder_widths == (16, 8, 10)
  with pytest.raises(ValueError, match=r"Lemma 2\.1\.1"):
    autoencoders.check_encoder_widths(model.encoder_widths)


def test_spec_is_hashable_and_a_static_jit_argument():
  model_a, model_b = vae_lib.VAE(**SMALL), vae_lib.VAE(**SMALL)
  assert model_a == model_b and hash(model_a) == hash(model_b)
  g = jax.jit(lambda model, x: x * model.latent_dim, static_argnums=0)
  g(model_a, 1.0)
  g(model_b, 2.0)
  assert g._cache_size() == 1
  with pytest.raises(dataclasses.FrozenInstanceError):
    model_a.latent_dim = 4  # type: ignore[misc]


@pytest.fixture(scope="module")
def mlp():
  model = vae_lib.VAE(**SMALL)
  return model, model.init(jax.random.key(0))


def test_init_layout(mlp):
  model, params = mlp
  assert set(params) == {"encoder", "decoder"}
  assert networks.widths_of(params["encoder"]) == (16, 8, 6)
  assert networks.widths_of(params["decoder"]) == (3, 8, 16)
  learned = vae_lib.VAE(**SMALL, likelihood="gaussian_learned")
  params = learned.init(jax.random.key(0))
  np.testing.assert_array_equal(params["log_scale"], np.zeros(16))


def test_encode_splits_the_last_layer_into_mu_and_log_var(mlp):
  model, params = mlp
  x = jax.random.uniform(jax.random.key(1), (16,))
  mu, log_var = model.encode(params, x)
  out = networks.network(params["encoder"], x, networks.mlp_activations("relu", 2))
  np.testing.assert_allclose(mu, out[:3], rtol=1e-6)
  np.testing.assert_allclose(log_var, out[3:], rtol=1e-6)
  np.testing.assert_allclose(model.code(params, x), mu, rtol=1e-6)
  assert model.decode(params, mu).shape == (16,)


def test_deterministic_autoencoder_outputs_the_code_only():
  model = vae_lib.VAE(**SMALL, stochastic=False)
  params = model.init(jax.random.key(0))
  assert networks.widths_of(params["encoder"]) == (16, 8, 3)
  x = jax.random.uniform(jax.random.key(1), (16,))
  # Same layout as autoencoders.init_autoencoder: the same code and reconstruction.
  np.testing.assert_allclose(model.code(params, x), autoencoders.encode(params, x), rtol=1e-6)
  np.testing.assert_allclose(model.decode(params, model.code(params, x)),
                             autoencoders.autoencoder(params, x), rtol=1e-6)
  with pytest.raises(ValueError, match="use model.code"):
    model.encode(params, x)


def test_reparameterize_is_mu_plus_sigma_epsilon():
  key = jax.random.key(2)
  mu, log_var = jnp.array([1.0, -2.0]), jnp.array([0.5, -1.0])
  z = vae_lib.VAE.reparameterize(key, mu, log_var)
  np.testing.assert_allclose(z, mu + jnp.exp(0.5 * log_var) * jax.random.normal(key, (2,)),
                             rtol=1e-6)
  many = jax.vmap(vae_lib.VAE.reparameterize, in_axes=(0, None, None))(
      jax.random.split(key, 20_000), mu, log_var)
  np.testing.assert_allclose(many.mean(0), mu, atol=0.03)
  np.testing.assert_allclose(many.var(0), jnp.exp(log_var), rtol=0.05)


@pytest.mark.parametrize("likelihood", vae_lib.LIKELIHOODS)
def test_log_likelihood_matches_scipy(mlp, likelihood):
  model = vae_lib.VAE(**SMALL, likelihood=likelihood, gaussian_scale=0.3)
  params = dict(mlp[1])   # the networks' shapes do not depend on the likelihood
  rng = np.random.default_rng(3)
  decoded = rng.normal(size=16)
  x = (rng.uniform(size=16) < 0.5).astype(np.float64)
  if likelihood == "gaussian_learned":
    params["log_scale"] = jnp.asarray(rng.normal(size=16) * 0.3 - 1.0, jnp.float32)
  got = model.log_likelihood(params, jnp.asarray(x, jnp.float32), jnp.asarray(decoded, jnp.float32))
  if likelihood == "bernoulli":
    expected = stats.bernoulli.logpmf(x, special.expit(decoded)).sum()
  elif likelihood == "gaussian":
    expected = stats.norm.logpdf(x, decoded, 0.3).sum()
  elif likelihood == "gaussian_learned":
    expected = stats.norm.logpdf(x, decoded, np.exp(np.asarray(params["log_scale"]))).sum()
  else:
    lam = special.expit(decoded)
    log_c = np.log(2 * np.arctanh(1 - 2 * lam) / (1 - 2 * lam))
    expected = (log_c + stats.bernoulli.logpmf(x, lam)).sum()
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  assert got.shape == ()


def test_learned_log_scale_is_floored(mlp):
  model = vae_lib.VAE(**SMALL, likelihood="gaussian_learned")
  params = dict(mlp[1], log_scale=jnp.full((16,), -50.0))
  x = jnp.zeros(16)
  expected = stats.norm.logpdf(0.0, 0.0, math.exp(vae_lib.MIN_LOG_SCALE)) * 16
  np.testing.assert_allclose(model.log_likelihood(params, x, x), expected, rtol=1e-5)


@pytest.mark.parametrize("likelihood", vae_lib.LIKELIHOODS)
def test_mean_sample_and_reconstruct_are_images(mlp, likelihood):
  model = vae_lib.VAE(**SMALL, likelihood=likelihood)
  params = dict(mlp[1], log_scale=jnp.zeros(16))
  decoded = jnp.linspace(-3.0, 3.0, 16)
  means = model.mean(params, decoded)
  if likelihood == "bernoulli":
    np.testing.assert_allclose(means, jax.nn.sigmoid(decoded), rtol=1e-6)
  elif likelihood == "continuous_bernoulli":
    np.testing.assert_allclose(means, distributions.continuous_bernoulli_mean(decoded), rtol=1e-6)
  else:
    np.testing.assert_allclose(means, jnp.clip(decoded, 0, 1))
  samples = model.sample(params, jax.random.key(1), 5)
  assert samples.shape == (5, 16) and np.all((samples >= 0) & (samples <= 1))
  x = jax.random.uniform(jax.random.key(2), (16,))
  np.testing.assert_allclose(
      model.reconstruct(params, x),
      model.mean(params, model.decode(params, model.encode(params, x)[0])), rtol=1e-6)


def test_sample_at_temperature_zero_decodes_the_prior_mean(mlp):
  model, params = mlp
  samples = model.sample(params, jax.random.key(3), 3, temperature=0.0)
  expected = model.mean(params, model.decode(params, jnp.zeros(3)))
  np.testing.assert_allclose(samples, np.broadcast_to(expected, (3, 16)), rtol=1e-6)


def test_conv_model_round_trip():
  model = vae_lib.VAE(input_shape=(8, 8, 1), architecture="conv", hidden_widths=(16,),
                      latent_dim=2, conv_channels=(2, 4), likelihood="continuous_bernoulli")
  assert model.feature_dim == 2 * 2 * 4 and model.encoder_widths == (16, 16, 4)
  params = model.init(jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (64,))

  @jax.jit
  def run(params, x):
    mu, log_var = model.encode(params, x)
    return mu, log_var, model.decode(params, mu), model.reconstruct(params, x)

  mu, log_var, decoded, reconstruction = run(params, x)
  assert mu.shape == log_var.shape == (2,)
  assert decoded.shape == reconstruction.shape == (64,)
  np.testing.assert_allclose(reconstruction, distributions.continuous_bernoulli_mean(decoded),
                             rtol=1e-5)
