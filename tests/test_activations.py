"""Def. 1.1.1 and Ex. 1.1.2: the activation registry."""
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from vae_jax.nn import activations

REQUIRED = ("relu", "leaky_relu", "elu", "softplus", "sigmoid", "tanh", "gelu", "silu", "identity")


def test_registry_has_the_zoo():
  assert set(REQUIRED) <= set(activations.names())


@pytest.mark.parametrize("name", activations.names())
def test_every_registered_activation_is_nonconstant_and_continuous(name):
  fn = activations.get(name)
  activations.check_activation(fn, name)   # raises if not
  grid = np.linspace(-5, 5, 1001, dtype=np.float32)
  values = np.asarray(fn(jnp.asarray(grid)))
  assert np.ptp(values) > 0.1
  assert np.abs(np.diff(values)).max() < 0.05


@pytest.mark.parametrize("name,reference", [
    ("relu", lambda x: np.maximum(x, 0)),
    ("leaky_relu", lambda x: np.where(x > 0, x, 0.01 * x)),
    ("elu", lambda x: np.where(x > 0, x, np.expm1(x))),
    ("softplus", lambda x: np.log1p(np.exp(x))),
    ("sigmoid", lambda x: 1 / (1 + np.exp(-x))),
    ("tanh", np.tanh),
    ("silu", lambda x: x / (1 + np.exp(-x))),
    ("identity", lambda x: x),
])
def test_activation_values_match_numpy(name, reference):
  x = np.linspace(-4, 4, 81)
  np.testing.assert_allclose(activations.get(name)(jnp.asarray(x, jnp.float32)), reference(x),
                             rtol=1e-5, atol=1e-6)


def test_gelu_matches_normal_cdf():
  from scipy.stats import norm
  x = np.linspace(-4, 4, 81)
  np.testing.assert_allclose(activations.get("gelu")(jnp.asarray(x, jnp.float32)),
                             x * norm.cdf(x), rtol=1e-5, atol=1e-6)


@given(st.floats(-1e3, 1e3, allow_nan=False))
@settings(max_examples=25, deadline=None)
def test_constant_functions_are_rejected(c):
  with pytest.raises(ValueError, match="constant"):
    activations.get(lambda x: jnp.zeros_like(x) + c)


@pytest.mark.parametrize("fn,match", [
    (lambda x: jnp.sign(x), "jumps"),
    (lambda x: (x > 0).astype(x.dtype), "jumps"),
    (lambda x: jnp.log(x), "non-finite"),
    (lambda x: x.sum(), "shape"),
])
def test_discontinuous_or_broken_functions_are_rejected(fn, match):
  with pytest.raises(ValueError, match=match):
    activations.get(fn)


def test_unknown_name_lists_choices():
  with pytest.raises(ValueError, match="unknown activation 'relux'.*relu"):
    activations.get("relux")


def test_register_checks_definition_and_duplicates():
  with pytest.raises(ValueError, match="already registered"):
    activations.register("relu", jnp.tanh)
  with pytest.raises(ValueError, match="constant"):
    activations.register("flat", lambda x: 0.0 * x)
  assert "flat" not in activations.names()
  activations.register("cube_test", lambda x: x ** 3 / 1000)
  assert "cube_test" in activations.names()


def test_custom_callable_is_accepted():
  fn = lambda x: jnp.arctan(x)  # noqa: E731
  assert activations.get(fn) is fn
