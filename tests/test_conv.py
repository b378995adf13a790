"""Convolutional φ-layers against hand computations (numpy loops, scipy) and XLA's convolution."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from vae_jax.nn import conv


def _same_padding(size, kernel, stride):
  """TensorFlow's SAME rule: ⌈n/s⌉ outputs, the smaller half of the padding first."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return out, total // 2


def _conv_by_loop(kernel, x, stride):
  """(W x)[i, j, c'] = Σ_{a,b,c} K[a, b, c, c'] x̃[s i + a, s j + b, c], written out."""
  k = kernel.shape[0]
  height, width, _ = x.shape
  out_h, pad_h = _same_padding(height, k, stride)
  out_w, pad_w = _same_padding(width, k, stride)
  padded = np.zeros((height + 2 * k, width + 2 * k, x.shape[2]))
  padded[pad_h:pad_h + height, pad_w:pad_w + width] = x
  y = np.zeros((out_h, out_w, kernel.shape[3]))
  for i in range(out_h):
    for j in range(out_w):
      for a in range(k):
        for b in range(k):
          y[i, j] += padded[stride * i + a, stride * j + b] @ kernel[a, b]
  return y


@pytest.mark.parametrize("shape,kernel_size,stride", [
    ((6, 6, 2), 4, 2), ((7, 5, 2), 3, 2), ((5, 6, 1), 3, 1), ((4, 4, 3), 4, 1)])
def test_conv_layer_matches_loop(shape, kernel_size, stride):
  rng = np.random.default_rng(0)
  x = rng.normal(size=shape)
  kernel = rng.normal(size=(kernel_size, kernel_size, shape[2], 3))
  bias = rng.normal(size=3)
  expected = np.tanh(_conv_by_loop(kernel, x, stride) + bias)
  got = conv.conv_layer((jnp.asarray(kernel, jnp.float32), jnp.asarray(bias, jnp.float32)),
                        jnp.asarray(x, jnp.float32), "tanh", stride)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_convolve_matches_scipy_correlate2d():
  rng = np.random.default_rng(1)
  image, kernel = rng.normal(size=(9, 8)), rng.normal(size=(3, 3))
  got = conv.convolve(jnp.asarray(kernel, jnp.float32)[:, :, None, None],
                      jnp.asarray(image, jnp.float32)[:, :, None], stride=1)[:, :, 0]
  np.testing.assert_allclose(got, signal.correlate2d(image, kernel, mode="same"),
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel_size", [3, 4])
def test_conv_transpose_is_the_matrix_transpose(kernel_size):
  rng = np.random.default_rng(2)
  kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, 2, 3)), jnp.float32)
  big_shape, small_shape = (8, 6, 2), (4, 3, 3)
  # The matrix of W: ℝ^{8·6·2} → ℝ^{4·3·3}, read off column by column.
  matrix = jax.jacobian(lambda v: conv.convolve(kernel, v.reshape(big_shape), 2).reshape(-1))(
      jnp.zeros(math.prod(big_shape)))
  h = jnp.asarray(rng.normal(size=small_shape), jnp.float32)
  bias = jnp.zeros(2)
  got = conv.conv_transpose_layer((kernel, bias), h, "identity", 2)
  assert got.shape == big_shape
  np.testing.assert_allclose(got.reshape(-1), matrix.T @ h.reshape(-1), rtol=1e-5, atol=1e-5)
  # ⟨Wᵀ h, y⟩ = ⟨h, W y⟩.
  y = jnp.asarray(rng.normal(size=big_shape), jnp.float32)
  np.testing.assert_allclose(jnp.vdot(got, y), jnp.vdot(h, conv.convolve(kernel, y, 2)),
                             rtol=1e-4)


def test_vmap_equals_loop():
  rng = np.random.default_rng(3)
  theta = (jnp.asarray(rng.normal(size=(4, 4, 1, 5)), jnp.float32), jnp.ones(5))
  images = jnp.asarray(rng.normal(size=(3, 8, 8, 1)), jnp.float32)
  batched = jax.jit(jax.vmap(conv.conv_layer, in_axes=(None, 0)))(theta, images)
  for image, got in zip(images, batched):
    np.testing.assert_allclose(got, conv.conv_layer(theta, image), rtol=1e-5, atol=1e-6)


def test_mnist_encoder_and_decoder_shapes():
  key = jax.random.key(0)
  encoder = conv.init_conv_encoder(key, (28, 28, 1), (32, 64), (16,), 10)
  decoder = conv.init_conv_decoder(key, 5, (28, 28, 1), (32, 64), (16,))
  shapes = jax.tree_util.tree_map(jnp.shape, (encoder, decoder))
  assert shapes[0] == {"conv": [((4, 4, 1, 32), (32,)), ((4, 4, 32, 64), (64,))],
                       "dense": [((16, 3136), (16,)), ((10, 16), (10,))]}
  assert shapes[1] == {"dense": [((16, 5), (16,)), ((3136, 16), (3136,))],
                       "conv_transpose": [((4, 4, 32, 64), (32,)), ((4, 4, 1, 32), (1,))]}
  images = jax.random.uniform(key, (2, 28, 28, 1))
  codes = jax.jit(jax.vmap(conv.conv_encoder, in_axes=(None, 0)))(encoder, images)
  assert codes.shape == (2, 10)
  decode = jax.jit(lambda theta, z: conv.conv_decoder(theta, z, (28, 28, 1)))
  outputs = jax.vmap(decode, in_axes=(None, 0))(decoder, codes[:, :5])
  assert outputs.shape == (2, 28, 28, 1) and np.all(np.isfinite(outputs))
  np.testing.assert_allclose(outputs[1], decode(decoder, codes[1, :5]), rtol=1e-5, atol=1e-5)


def test_conv_encoder_is_conv_layers_then_dense():
  key = jax.random.key(1)
  theta = conv.init_conv_encoder(key, (8, 8, 1), (2,), (), 3, activation="tanh")
  x = jax.random.uniform(key, (8, 8, 1))
  (kernel, bias), = theta["conv"]
  (weight, dense_bias), = theta["dense"]
  h = np.tanh(_conv_by_loop(np.asarray(kernel), np.asarray(x), 2) + np.asarray(bias))
  expected = np.asarray(weight) @ h.reshape(-1) + np.asarray(dense_bias)
  np.testing.assert_allclose(conv.conv_encoder(theta, x, "tanh"), expected, rtol=1e-4, atol=1e-5)


def test_check_input_shape():
  assert conv.check_input_shape((28, 28, 1), (32, 64)) == (28, 28, 1)
  with pytest.raises(ValueError, match="divisible by 8"):
    conv.check_input_shape((28, 28, 1), (8, 16, 32))
  with pytest.raises(ValueError, match="conv_channels"):
    conv.check_input_shape((28, 28, 1), ())
  with pytest.raises(ValueError, match=r"\(H, W, C\)"):
    conv.check_input_shape((784,), (32,))


@pytest.mark.parametrize("shape,kernel_size,stride", [
    ((28, 28, 1), 4, 2), ((14, 14, 3), 4, 2), ((9, 7, 2), 3, 2), ((8, 8, 2), 5, 2),
    ((10, 9, 1), 3, 3), ((6, 6, 2), 2, 2), ((5, 5, 2), 1, 2), ((6, 5, 2), 4, 1)])
def test_convolve_matches_lax_conv(shape, kernel_size, stride):
  """The space-to-depth matrix product equals XLA's "SAME" convolution."""
  rng = np.random.default_rng(4)
  kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, shape[2], 3)), jnp.float32)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  expected = jax.lax.conv_general_dilated(x[None], kernel, (stride, stride), "SAME",
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]
  np.testing.assert_allclose(conv.convolve(kernel, x, stride), expected, rtol=1e-4, atol=1e-4)


def _conv_transpose_by_loop(kernel, h, stride):
  """Wᵀ h for the `_conv_by_loop` convolution W: [sH, sW, C'] → [H, W, C], as an overlap-add:
  every input position (i, j) adds K[a, b] h[i, j] at output (s i + a − pad, s j + b − pad)."""
  k = kernel.shape[0]
  height, width = h.shape[0] * stride, h.shape[1] * stride
  _, pad_h = _same_padding(height, k, stride)
  _, pad_w = _same_padding(width, k, stride)
  out = np.zeros((height, width, kernel.shape[2]))
  for i in range(h.shape[0]):
    for j in range(h.shape[1]):
      for a in range(k):
        for b in range(k):
          row, col = stride * i + a - pad_h, stride * j + b - pad_w
          if 0 <= row < height and 0 <= col < width:
            out[row, col] += kernel[a, b] @ h[i, j]
  return out


@pytest.mark.parametrize("output_shape,channels,hidden,kernel_size", [
    ((8, 8, 1), (2, 3), (5,), 4), ((8, 4, 2), (3,), (), 3), ((16, 8, 1), (2, 2), (6, 4), 4)])
def test_conv_decoder_matches_a_hand_computation(output_shape, channels, hidden, kernel_size):
  """g(z) written out with numpy: relu dense layers, reshape, relu transposed convs, and an
  affine last layer (logits can be negative: a ReLU there would make this fail)."""
  key = jax.random.key(5)
  theta = conv.init_conv_decoder(key, 3, output_shape, channels, hidden, kernel_size=kernel_size)
  rng = np.random.default_rng(5)   # random biases too (init sets them to 0)
  theta = jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), theta)
  z = rng.normal(size=3)
  h = z
  for weight, bias in theta["dense"]:
    h = np.maximum(np.asarray(weight, np.float64) @ h + np.asarray(bias), 0.0)
  depth = len(channels)
  h = h.reshape(output_shape[0] // 2 ** depth, output_shape[1] // 2 ** depth, channels[-1])
  for i, (kernel, bias) in enumerate(theta["conv_transpose"]):
    h = _conv_transpose_by_loop(np.asarray(kernel, np.float64), h, 2) + np.asarray(bias)
    if i < depth - 1:
      h = np.maximum(h, 0.0)
  got = conv.conv_decoder(theta, jnp.asarray(z, jnp.float32), output_shape)
  assert got.shape == output_shape and h.min() < 0
  np.testing.assert_allclose(got, h, rtol=1e-4, atol=1e-4 * np.abs(h).max())


# -- the two implementations: patch matmul (CPU default) and lax.conv (GPU/TPU default) ----

def test_auto_picks_patches_on_cpu_and_the_environment_overrides(monkeypatch):
  monkeypatch.delenv(conv.IMPL_ENV, raising=False)
  assert jax.default_backend() == "cpu" and conv.resolve_impl() == "patches"
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert conv.resolve_impl() == conv.resolve_impl("auto") == "xla"
  monkeypatch.setenv(conv.IMPL_ENV, "patches")
  assert conv.resolve_impl() == "patches" and conv.resolve_impl("xla") == "xla"
  with pytest.raises(ValueError, match="conv impl='cudnn' is unknown"):
    conv.resolve_impl("cudnn")


class TestImplementationsAgree(chex.TestCase):
  """Encoder, decoder and their gradients are the same map under "patches" and "xla"."""

  @chex.variants(with_jit=True)   # op-by-op (without_jit) it is slow and adds nothing to the layer test below
  def test_encoder_decoder_and_gradients(self):
    key = jax.random.key(5)
    encoder = jax.jit(lambda k: conv.init_conv_encoder(k, (8, 8, 2), (3, 4), (5,), 6))(key)
    decoder = jax.jit(lambda k: conv.init_conv_decoder(k, 3, (8, 8, 2), (3, 4), (5,)))(key)
    images = jax.random.uniform(jax.random.fold_in(key, 1), (2, 8, 8, 2))

    def loss(params, impl):
      codes = jax.vmap(lambda x: conv.conv_encoder(params[0], x, impl=impl))(images)
      outputs = jax.vmap(lambda z: conv.conv_decoder(params[1], z, (8, 8, 2), impl=impl))(codes[:, :3])
      return jnp.mean((outputs - images) ** 2), (codes, outputs)

    run = self.variant(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (patch_loss, patch_out), patch_grads = run((encoder, decoder), "patches")
    (xla_loss, xla_out), xla_grads = run((encoder, decoder), "xla")
    chex.assert_shape(patch_out[1], (2, 8, 8, 2))
    chex.assert_tree_all_finite((patch_grads, xla_grads))
    chex.assert_trees_all_close((patch_loss, patch_out), (xla_loss, xla_out), rtol=1e-4, atol=1e-5)
    chex.assert_trees_all_close(patch_grads, xla_grads, rtol=1e-4, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_layers_on_odd_shapes(self):
    rng = np.random.default_rng(6)
    for shape, k, s in (((9, 7, 2), 3, 2), ((10, 9, 1), 3, 3), ((6, 5, 2), 4, 1)):
      theta = (jnp.asarray(rng.normal(size=(k, k, shape[2], 3)), jnp.float32), jnp.ones(3))
      x = jnp.asarray(rng.normal(size=shape), jnp.float32)
      layer = self.variant(conv.conv_layer, static_argnums=(2, 3, 4))
      chex.assert_trees_all_close(layer(theta, x, "tanh", s, "patches"), layer(theta, x, "tanh", s, "xla"),
                                  rtol=1e-4, atol=1e-5)
