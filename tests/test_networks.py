"""Def. 1.1.3–1.1.5: neurons, layers and deep networks against numpy."""
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

from vae_jax.nn import activations
from vae_jax.nn import networks

FIGURE_1_1 = (4, 3, 4, 5, 3, 7, 2)   # input 4, hidden 3, 4, 5, 3, 7, output 2


def np_relu(x):
  return np.maximum(x, 0.0)


def test_neuron_by_hand():
  w, b, x = np.array([1.0, -2.0, 0.5]), 0.25, np.array([2.0, 1.0, 4.0])
  # ⟨w, x⟩ + b = 2 − 2 + 2 + 0.25 = 2.25
  assert float(networks.neuron((jnp.asarray(w), b), jnp.asarray(x), "relu")) == pytest.approx(2.25)
  assert float(networks.neuron((jnp.asarray(-w), -b), jnp.asarray(x), "relu")) == 0.0
  assert float(networks.neuron((jnp.asarray(w), b), jnp.asarray(x), "tanh")) == pytest.approx(np.tanh(2.25))


def test_layer_is_m_neurons():
  rng = np.random.default_rng(0)
  weight, bias, x = rng.normal(size=(3, 5)), rng.normal(size=3), rng.normal(size=5)
  expected = np.tanh(weight @ x + bias)
  got = networks.layer((jnp.asarray(weight), jnp.asarray(bias)), jnp.asarray(x), "tanh")
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  neurons = [networks.neuron((jnp.asarray(weight[j]), bias[j]), jnp.asarray(x), "tanh") for j in range(3)]
  np.testing.assert_allclose(got, np.array(neurons), rtol=1e-6)


def numpy_network(theta, x, acts):
  for (weight, bias), act in zip(theta, acts):
    x = act(np.asarray(weight, np.float64) @ x + np.asarray(bias, np.float64))
  return x


def test_figure_1_1_network_by_hand():
  theta = networks.init(jax.random.key(0), FIGURE_1_1, "relu")
  assert networks.widths_of(theta) == FIGURE_1_1
  assert [w.shape for w, _ in theta] == [(3, 4), (4, 3), (5, 4), (3, 5), (7, 3), (2, 7)]
  theta = jax.tree_util.tree_map(lambda p: p + 0.1, theta)   # non-zero biases
  x = np.array([0.3, -1.2, 2.0, 0.7])
  acts = networks.mlp_activations("relu", 6)
  np_acts = [np_relu] * 5 + [lambda v: v]
  np.testing.assert_allclose(networks.network(theta, jnp.asarray(x, jnp.float32), acts),
                             numpy_network(theta, x, np_acts), rtol=1e-5, atol=1e-6)


def test_fold_equals_explicit_composition():
  theta = networks.init(jax.random.key(1), FIGURE_1_1, "tanh")
  x = jnp.linspace(-1, 1, 4)
  h = x
  for theta_i in theta:
    h = networks.layer(theta_i, h, "tanh")
  np.testing.assert_allclose(networks.network(theta, x, "tanh"), h, rtol=1e-6)
  # H_6(H_5(H_4(H_3(H_2(H_1(x)))))) written out.
  L = lambda i, v: networks.layer(theta[i], v, "tanh")  # noqa: E731
  explicit = L(5, L(4, L(3, L(2, L(1, L(0, x))))))
  np.testing.assert_allclose(networks.network(theta, x, "tanh"), explicit, rtol=1e-6)


def test_vmap_equals_loop_and_jit_equals_eager():
  theta = networks.init(jax.random.key(2), FIGURE_1_1, "relu")
  xs = jax.random.normal(jax.random.key(3), (16, 4))
  batched = jax.vmap(networks.network, in_axes=(None, 0, None))
  loop = np.stack([networks.network(theta, x, "relu") for x in xs])
  np.testing.assert_allclose(batched(theta, xs, "relu"), loop, rtol=1e-5, atol=1e-6)
  jitted = jax.jit(batched, static_argnums=2)
  np.testing.assert_allclose(jitted(theta, xs, "relu"), batched(theta, xs, "relu"), rtol=1e-5, atol=1e-6)


def test_gradients_match_finite_differences():
  with jax.enable_x64(True):
    theta = networks.init(jax.random.key(4), (3, 5, 2), "tanh", dtype=jnp.float64)
    x = jnp.array([0.2, -0.4, 0.9], jnp.float64)
    loss = lambda th: jnp.sum(networks.network(th, x, "tanh") ** 2)  # noqa: E731
    grads = jax.grad(loss)(theta)
    flat, unravel = jax.flatten_util.ravel_pytree(theta)
    flat_grad, _ = jax.flatten_util.ravel_pytree(grads)
    eps = 1e-6
    for i in range(0, flat.size, 3):
      e = jnp.zeros_like(flat).at[i].set(eps)
      fd = (loss(unravel(flat + e)) - loss(unravel(flat - e))) / (2 * eps)
      assert float(fd) == pytest.approx(float(flat_grad[i]), rel=1e-5, abs=1e-8)


def test_theta_is_a_plain_pytree_for_optax():
  theta = networks.init(jax.random.key(5), (4, 3, 2))
  opt = optax.adam(1e-2)
  state = opt.init(theta)
  grads = jax.tree_util.tree_map(jnp.ones_like, theta)
  updates, _ = opt.update(grads, state)
  new = optax.apply_updates(theta, updates)
  assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(theta)
  assert networks.num_parameters(theta) == 4 * 3 + 3 + 3 * 2 + 2


def test_init_scales():
  he = networks.init(jax.random.key(6), (1000, 500), "relu")[0][0]
  glorot = networks.init(jax.random.key(6), (1000, 500), "tanh")[0][0]
  assert float(jnp.var(he)) == pytest.approx(2 / 1000, rel=0.05)
  assert float(jnp.var(glorot)) == pytest.approx(2 / 1500, rel=0.05)


def test_bad_widths_and_activation_counts():
  with pytest.raises(ValueError, match="positive integer"):
    networks.init(jax.random.key(0), (4, 0, 2))
  with pytest.raises(ValueError, match="no layer"):
    networks.init(jax.random.key(0), (4,))
  theta = networks.init(jax.random.key(0), (4, 3, 2))
  with pytest.raises(ValueError, match="3 activations for a network of 2 layers"):
    networks.network(theta, jnp.ones(4), ("relu", "relu", "relu"))


@given(widths=st.lists(st.integers(1, 9), min_size=2, max_size=6),
       act=st.sampled_from(sorted(set(activations.names()) - {"cube_test"})),
       seed=st.integers(0, 2**16))
@settings(max_examples=30, deadline=None)
def test_property_random_networks_match_numpy(widths, act, seed):
  theta = networks.init(jax.random.key(seed), widths, act)
  assert networks.widths_of(theta) == tuple(widths)
  x = np.random.default_rng(seed).normal(size=widths[0])
  fn = activations.get(act)
  np_act = lambda v: np.asarray(fn(jnp.asarray(v, jnp.float32)), np.float64)  # noqa: E731
  np.testing.assert_allclose(networks.network(theta, jnp.asarray(x, jnp.float32), act),
                             numpy_network(theta, x, [np_act] * (len(widths) - 1)),
                             rtol=1e-4, atol=1e-4)
