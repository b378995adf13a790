"""chex: the same numbers with and without jit, and the shape/finiteness contracts of the API.

`chex.variants` runs each test once jitted and once op by op; the models and
objectives are the lead's code (vae_jax/models, vae_jax/inference), checked
here from outside. Multi-device runs use `chex.set_n_cpu_devices` in the
subprocesses of tests/test_sharding.py.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.applications import compression
from vae_jax.applications import generation
from vae_jax.inference import evaluation
from vae_jax.inference import objectives
from vae_jax.models import vae as vae_lib
from vae_jax.nn import networks

MODEL = vae_lib.VAE(hidden_widths=(16,), latent_dim=3)


def _params():
  return MODEL.init(jax.random.PRNGKey(0))


def _images(n=6):
  return jax.random.uniform(jax.random.PRNGKey(1), (n, MODEL.data_dim))


class VariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_network_is_the_fold_of_its_layers(self):
    theta = networks.init(jax.random.PRNGKey(2), (5, 4, 3, 2), "tanh")
    x = jnp.linspace(-1.0, 1.0, 5)
    got = self.variant(lambda t, v: networks.network(t, v, "tanh"))(theta, x)
    h = x
    for weight, bias in theta:
      h = jnp.tanh(weight @ h + bias)
    chex.assert_shape(got, (2,))
    chex.assert_trees_all_close(got, h, rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_batch_loss_and_gradients(self):
    params, batch, key = _params(), _images(), jax.random.PRNGKey(3)

    def loss(p, objective):
      return objectives.batch_loss(MODEL, p, batch, key, objective=objective, num_samples=2)

    (value, metrics), grads = self.variant(jax.value_and_grad(loss, has_aux=True),
                                           static_argnums=1)(params, "iwae")
    (reference, _), reference_grads = jax.value_and_grad(loss, has_aux=True)(params, "iwae")
    chex.assert_tree_all_finite((value, metrics, grads))
    chex.assert_trees_all_equal_shapes(grads, params)
    chex.assert_trees_all_close((value, grads), (reference, reference_grads), rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_log_likelihood_estimate_does_not_depend_on_the_chunk_size(self):
    params, x, key = _params(), _images(1)[0], jax.random.PRNGKey(4)
    estimate = self.variant(lambda p, v, c: evaluation.log_likelihood_estimate(
        MODEL, p, v, key, num_samples=12, chunk_size=c), static_argnums=2)
    chex.assert_trees_all_close(estimate(params, x, 5), estimate(params, x, 12), rtol=1e-5)


def test_assert_max_traces_the_step_is_compiled_once():
  params = _params()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(p, batch):
    return objectives.batch_loss(MODEL, p, batch, jax.random.PRNGKey(0), objective="elbo")[0]

  for seed in range(3):   # new values, same shapes: no retrace
    step(params, jax.random.uniform(jax.random.PRNGKey(seed), (4, MODEL.data_dim)))


def test_api_shape_and_finiteness_contracts():
  params = _params()
  with pytest.raises(AssertionError, match="rank"):
    networks.layer(params["encoder"][0], jnp.ones((2, MODEL.data_dim)))    # a batch: vmap it
  with pytest.raises(AssertionError):
    generation.interpolation_path(jnp.zeros(3), jnp.zeros(4), 5)
  with pytest.raises(AssertionError):
    compression.decode_latents(MODEL, params, np.zeros((2, 5), np.float32))   # latent_dim is 3
  nan_params = jax.tree_util.tree_map(lambda a: jnp.full_like(a, jnp.nan), params)
  with pytest.raises(AssertionError, match="finite"):
    compression.compress(MODEL, nan_params, np.asarray(_images(2)), "8")    # NaN codes never written
