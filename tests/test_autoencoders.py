"""Ch. 2: encoder/decoder width conditions and the autoencoder."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from vae_jax.nn import autoencoders
from vae_jax.nn import networks

FIGURE_2_1 = (5, 4, 3, 2, 3, 4, 5)


def test_figure_2_1_autoencoder_by_hand():
  params = autoencoders.init_autoencoder(jax.random.key(0), FIGURE_2_1, "relu")
  assert networks.widths_of(params["encoder"]) == (5, 4, 3, 2)   # Figure 2.2
  assert networks.widths_of(params["decoder"]) == (2, 3, 4, 5)   # Figure 2.3
  params = jax.tree_util.tree_map(lambda p: p + 0.05, params)
  x = np.array([0.1, 0.5, -0.3, 0.8, 0.2])
  h = x
  for i, (w, b) in enumerate(params["encoder"] + params["decoder"]):
    h = np.asarray(w, np.float64) @ h + np.asarray(b, np.float64)
    if i not in (2, 5):   # identity at the bottleneck and at the output
      h = np.maximum(h, 0)
  np.testing.assert_allclose(autoencoders.autoencoder(params, jnp.asarray(x, jnp.float32)), h,
                             rtol=1e-5, atol=1e-6)
  code = autoencoders.encode(params, jnp.asarray(x, jnp.float32))
  assert code.shape == (2,)
  np.testing.assert_allclose(autoencoders.decode(params, code),
                             autoencoders.autoencoder(params, jnp.asarray(x, jnp.float32)), rtol=1e-6)
  err = autoencoders.reconstruction_error(params, jnp.asarray(x, jnp.float32))
  assert float(err) == pytest.approx(float(np.sum((x - h) ** 2)), rel=1e-5)


def test_violations_name_lemma_position_and_widths():
  with pytest.raises(ValueError, match=r"Lemma 2\.1\.1.*position 2 of \(5, 4, 6, 2\)"):
    autoencoders.check_encoder_widths((5, 4, 6, 2))
  with pytest.raises(ValueError, match=r"Lemma 2\.1\.2.*position 3 of \(2, 3, 4, 1\)"):
    autoencoders.check_decoder_widths((2, 3, 4, 1))
  with pytest.raises(ValueError, match="Lemma 2.1.1"):
    autoencoders.init_encoder(jax.random.key(0), (3, 5))
  with pytest.raises(ValueError, match="bottleneck"):
    autoencoders.split_widths((2, 3, 4))


def is_monotone(widths, shrinking):
  pairs = zip(widths[:-1], widths[1:])
  return all(a >= b for a, b in pairs) if shrinking else all(a <= b for a, b in pairs)


@given(st.lists(st.integers(1, 12), min_size=2, max_size=7))
@settings(max_examples=200, deadline=None)
def test_width_conditions_accept_exactly_the_monotone_sequences(widths):
  for check, shrinking in ((autoencoders.check_encoder_widths, True),
                           (autoencoders.check_decoder_widths, False)):
    if is_monotone(widths, shrinking):
      assert check(widths) == tuple(widths)
    else:
      with pytest.raises(ValueError):
        check(widths)


@given(st.lists(st.integers(1, 12), min_size=2, max_size=5).map(lambda w: sorted(w, reverse=True)))
@settings(max_examples=50, deadline=None)
def test_sorted_widths_always_valid(widths):
  autoencoders.check_encoder_widths(widths)
  autoencoders.check_decoder_widths(widths[::-1])


def test_autoencoder_trains_on_a_line():
  """A 2-1-2 linear autoencoder learns to reconstruct data on a line."""
  import optax
  params = autoencoders.init_autoencoder(jax.random.key(1), (2, 1, 2), "identity")
  t = jnp.linspace(-1, 1, 64)[:, None]
  xs = jnp.concatenate([t, 2 * t], axis=1)
  loss = lambda p: jnp.mean(jax.vmap(autoencoders.reconstruction_error, (None, 0, None))(p, xs, "identity"))  # noqa
  opt = optax.adam(0.05)
  state = opt.init(params)
  first = float(loss(params))
  for _ in range(300):
    grads = jax.grad(loss)(params)
    updates, state = opt.update(grads, state)
    params = optax.apply_updates(params, updates)
  assert float(loss(params)) < 1e-3 * first
