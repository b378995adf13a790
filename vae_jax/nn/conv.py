"""Convolutional φ-layers and conv encoders/decoders, as pure functions of θ.

A convolutional layer is a φ-layer (Def. 1.1.4) H(x) = φ̂(W x + b) whose
linear map W is a convolution: for one image x ∈ ℝ^{H×W×C} and a kernel
K ∈ ℝ^{k×k×C×C'},

    (W x)[i, j, c'] = Σ_{a, b < k} Σ_{c < C} K[a, b, c, c'] · x̃[s·i + a, s·j + b, c],

where s is the stride and x̃ is x zero-padded "SAME"-style (TensorFlow's rule:
the output has ⌈H/s⌉ × ⌈W/s⌉ positions, the total padding
max((⌈H/s⌉ − 1)s + k − H, 0) split with the smaller half before). The bias
b ∈ ℝ^{C'} is shared by all positions. W is a (sparse, weight-shared) matrix
ℝ^{HWC} → ℝ^{H'W'C'}, so everything Ch. 1 says about φ-layers holds.

The decoder's layers use the *transposed* convolution Wᵀ: ℝ^{H'W'C'} → ℝ^{HWC},
the adjoint of a strided convolution (`conv_transpose_layer`); with stride 2 it
doubles the resolution. Its kernel is stored as the kernel of the convolution
it transposes, [k, k, C_out, C_in] (the layout of Keras' Conv2DTranspose).

Everything is written for one image [H, W, C] and batched with `jax.vmap`.
Parameters are plain pytrees of (kernel, bias) pairs.

Architecture for 28×28×1 images with channels (32, 64), kernel 4, stride 2:

    encoder: 28×28×1 →conv→ 14×14×32 →conv→ 7×7×64 → flatten (3136)
             → dense φ-layers (3136, *hidden, out_dim), the last one affine;
    decoder: z → dense φ-layers (d, *reversed(hidden), 3136) → 7×7×64
             →convᵀ→ 14×14×32 →convᵀ→ 28×28×1 (affine: logits or means).

A kernel of 4 with stride 2 makes every output position of a transposed
convolution receive the same number (2×2) of contributions, which avoids the
checkerboard artefacts of kernel 3.

Two implementations of W x compute the same map (`impl`): "patches", a
hand-written space-to-depth matrix product (14× faster than `lax.conv` on
XLA:CPU, whose strided and transposed convolution gradients are slow loops),
and "xla", `lax.conv_general_dilated`, XLA's well-kept convolution (cuDNN on
GPU, the MXU on TPU). "auto" (the default) takes "patches" on CPU and "xla"
elsewhere; every function takes `impl=`, and `$VAE_JAX_CONV_IMPL` overrides the
default for a whole program (e.g. `VAE_JAX_CONV_IMPL=patches python -m
experiments.train ...` on a GPU). The choice is made when a function is traced.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import chex
import jax
import jax.numpy as jnp

from vae_jax.nn import activations as activations_lib
from vae_jax.nn import networks

ConvParams = tuple[jax.Array, jax.Array]      # (kernel [k, k, C_in, C_out], bias [C_out])

KERNEL_SIZE = 4
STRIDE = 2
_HE_ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "silu")
IMPLS = ("auto", "patches", "xla")
IMPL_ENV = "VAE_JAX_CONV_IMPL"


def resolve_impl(impl: str | None = None) -> str:
  """"patches" or "xla": `impl`, else $VAE_JAX_CONV_IMPL, else "auto" (patches on CPU, xla on GPU/TPU)."""
  impl = impl or os.environ.get(IMPL_ENV) or "auto"
  if impl not in IMPLS:
    raise ValueError(f"conv impl={impl!r} is unknown (argument or ${IMPL_ENV});"
                     f" choose one of {', '.join(IMPLS)}.")
  if impl == "auto":
    return "patches" if jax.default_backend() == "cpu" else "xla"
  return impl


def _same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
  """(⌈n/s⌉ outputs, padding before) of TensorFlow's "SAME" rule along one axis."""
  out = -(-size // stride)
  return out, max((out - 1) * stride + kernel_size - size, 0) // 2


def convolve(kernel: jax.Array, x: jax.Array, stride: int = STRIDE,
             impl: str | None = None) -> jax.Array:
  """The linear map W x of a conv layer (no bias, no φ), "SAME" padding.

  With impl "xla", `lax.conv_general_dilated`. With "patches" (the default on
  CPU), one matrix product: the gradients of XLA:CPU's convolutions (strided,
  or transposed) fall back to a slow loop, inside `lax.scan` ~6x slower than
  this. With q = ⌈k/s⌉ and the
  kernel zero-padded to qs taps, write the padded image in s×s blocks
  x̂[I, J] ∈ ℝ^{s·s·C} (space-to-depth); then output (i, j) reads the q×q
  blocks (i + α, j + α'), α, α' < q, and

      (W x)[i, j] = Σ_{α, α'} x̂[i + α, j + α'] · K̂[α, α'],
      K̂[α, α'][(β, β', c), c'] = K[sα + β, sα' + β', c, c'],

  a product of the [H'W', q²s²C] patch matrix with K̂ ∈ ℝ^{q²s²C×C'}.
  Reshapes, slices and a dot only, so its transpose (`conv_transpose_layer`)
  and gradients are of the same kind.

  Args:
    kernel: K, [k, k, C, C'].
    x: one image, [H, W, C].
    stride: s, the same along both spatial axes.
    impl: "auto", "patches" or "xla" (see `resolve_impl`).

  Returns:
    W x, [⌈H/s⌉, ⌈W/s⌉, C'].
  """
  chex.assert_rank([kernel, x], [4, 3])
  chex.assert_equal(kernel.shape[2], x.shape[2])
  if resolve_impl(impl) == "xla":
    return jax.lax.conv_general_dilated(x[None], kernel, (stride, stride), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]
  k, s = kernel.shape[0], stride
  q = -(-k // s)
  channels, out_channels = x.shape[2], kernel.shape[3]
  (out_h, before_h), (out_w, before_w) = (_same_padding(n, k, s) for n in x.shape[:2])
  # Pad to s(H' + q − 1) rows: every tap the outputs read, and whole blocks.
  padded = jnp.pad(x, ((before_h, s * (out_h + q - 1) - x.shape[0] - before_h),
                       (before_w, s * (out_w + q - 1) - x.shape[1] - before_w), (0, 0)))
  blocks = padded.reshape(out_h + q - 1, s, out_w + q - 1, s, channels).transpose(0, 2, 1, 3, 4)
  blocks = blocks.reshape(out_h + q - 1, out_w + q - 1, s * s * channels)
  patches = jnp.concatenate(
      [blocks[a:a + out_h, b:b + out_w] for a in range(q) for b in range(q)], axis=-1)
  kernel = jnp.pad(kernel, ((0, q * s - k), (0, q * s - k), (0, 0), (0, 0)))
  kernel = kernel.reshape(q, s, q, s, channels, out_channels).transpose(0, 2, 1, 3, 4, 5)
  return patches @ kernel.reshape(-1, out_channels)


def conv_layer(theta_i: ConvParams, x: jax.Array,
               activation: activations_lib.ActivationLike = "relu",
               stride: int = STRIDE, impl: str | None = None) -> jax.Array:
  """Convolutional φ-layer H(x) = φ̂(W x + b), W a strided convolution.

  Args:
    theta_i: (K, b) with K ∈ ℝ^{k×k×C×C'}, b ∈ ℝ^{C'}.
    x: one image, [H, W, C].
    activation: φ, a registered name or a callable.
    stride: s.
    impl: the convolution's implementation (`resolve_impl`).

  Returns:
    H(x), [⌈H/s⌉, ⌈W/s⌉, C'].
  """
  kernel, bias = theta_i
  return activations_lib.get(activation)(convolve(kernel, x, stride, impl) + bias[None, None, :])


def conv_transpose_layer(theta_i: ConvParams, x: jax.Array,
                         activation: activations_lib.ActivationLike = "relu",
                         stride: int = STRIDE, impl: str | None = None) -> jax.Array:
  """Transposed-convolution φ-layer H(x) = φ̂(Wᵀ x + b).

  W: ℝ^{sH×sW×C'} → ℝ^{H×W×C} is the strided "SAME" convolution with kernel
  K ∈ ℝ^{k×k×C'×C} (`convolve`), and Wᵀ its adjoint (matrix transpose):
  ⟨Wᵀ x, y⟩ = ⟨x, W y⟩ for all y. It maps [H, W, C] to [sH, sW, C'].
  It is `jax.linear_transpose` of `convolve`, so exact by construction: the
  patch product becomes x · K̂ᵀ and the patch gathering an overlap-add.

  Args:
    theta_i: (K, b) with K ∈ ℝ^{k×k×C'×C} (output channels first, as the
      kernel of the convolution being transposed) and b ∈ ℝ^{C'}.
    x: one feature map, [H, W, C].
    activation: φ.
    stride: s.
    impl: the convolution's implementation (`resolve_impl`).

  Returns:
    H(x), [sH, sW, C'].
  """
  kernel, bias = theta_i
  height, width, _ = x.shape
  output = jax.ShapeDtypeStruct((height * stride, width * stride, kernel.shape[2]), x.dtype)
  transpose = jax.linear_transpose(lambda y: convolve(kernel, y, stride, impl), output)
  (wt_x,) = transpose(x)
  return activations_lib.get(activation)(wt_x + bias[None, None, :])


def conv_output_shape(input_shape: Sequence[int], channels: Sequence[int],
                      stride: int = STRIDE) -> tuple[int, int, int]:
  """Shape [H', W', C_last] of the conv encoder's last feature map."""
  height, width = int(input_shape[0]), int(input_shape[1])
  for _ in channels:
    height, width = -(-height // stride), -(-width // stride)
  return height, width, int(channels[-1])


def check_input_shape(input_shape: Sequence[int], channels: Sequence[int],
                      stride: int = STRIDE) -> tuple[int, int, int]:
  """Checks that the decoder can mirror the encoder exactly; returns the shape.

  The transposed layers multiply the resolution by s, so H and W must be
  divisible by s^(number of conv layers) (28 = 7·2² for two layers).

  Raises:
    ValueError: for a shape that is not [H, W, C] or not divisible.
  """
  input_shape = tuple(int(d) for d in input_shape)
  if len(input_shape) != 3 or min(input_shape) < 1:
    raise ValueError(
        f"a conv model needs input_shape (H, W, C) of positive sizes, got {input_shape}.")
  if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
    raise ValueError(
        f"conv_channels must be a non-empty tuple of positive integers, got {tuple(channels)}.")
  factor = stride ** len(channels)
  if input_shape[0] % factor or input_shape[1] % factor:
    raise ValueError(
        f"input_shape {input_shape} with {len(channels)} stride-{stride} conv layers:"
        f" H and W must be divisible by {factor} so the decoder mirrors the encoder;"
        " use fewer conv_channels.")
  return input_shape


def _init_kernel(key: jax.Array, shape: tuple[int, ...], fan_in: int, fan_out: int,
                 activation, dtype) -> jax.Array:
  """He normal (variance 2/fan_in) for ReLU-like φ, else Glorot uniform."""
  if isinstance(activation, str) and activation in _HE_ACTIVATIONS:
    return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / fan_in)
  limit = math.sqrt(6.0 / (fan_in + fan_out))
  return jax.random.uniform(key, shape, dtype, -limit, limit)


def init_conv_encoder(key: jax.Array, input_shape: Sequence[int], channels: Sequence[int],
                      hidden_widths: Sequence[int], out_dim: int,
                      activation: activations_lib.ActivationLike = "relu",
                      kernel_size: int = KERNEL_SIZE, dtype=jnp.float32) -> dict:
  """θ of `conv_encoder`: conv layers then dense layers (F, *hidden, out_dim).

  Kernels are initialised as in `networks.init` with fan-in k²C (He for
  ReLU-like φ, Glorot otherwise); biases start at 0.

  Args:
    key: a `jax.random` key.
    input_shape: (H, W, C) of one image.
    channels: C'_1, …, C'_n of the conv layers.
    hidden_widths: widths of the dense hidden layers after flattening.
    out_dim: width of the last (affine) dense layer.
    activation: φ of every layer but the last.
    kernel_size: k.
    dtype: parameter dtype.

  Returns:
    {"conv": [(K_1, b_1), …], "dense": θ of the dense network}.
  """
  conv_key, dense_key = jax.random.split(key)
  conv = []
  in_channels = int(input_shape[2])
  for i, out_channels in enumerate(channels):
    shape = (kernel_size, kernel_size, in_channels, out_channels)
    kernel = _init_kernel(jax.random.fold_in(conv_key, i), shape,
                          kernel_size ** 2 * in_channels, kernel_size ** 2 * out_channels,
                          activation, dtype)
    conv.append((kernel, jnp.zeros((out_channels,), dtype)))
    in_channels = out_channels
  flat = math.prod(conv_output_shape(input_shape, channels))
  widths = (flat, *hidden_widths, out_dim)
  dense = networks.init(dense_key, widths,
                        networks.mlp_activations(activation, len(widths) - 1), dtype)
  return {"conv": conv, "dense": dense}


def conv_encoder(theta: dict, x: jax.Array,
                 activation: activations_lib.ActivationLike = "relu",
                 stride: int = STRIDE, impl: str | None = None) -> jax.Array:
  """f(x) = D_m ∘ … ∘ D_1 ∘ flatten ∘ H_n ∘ … ∘ H_1 (x) for one image.

  H_i are conv φ-layers (φ = `activation`), D_j dense φ-layers, the last one
  affine (φ = identity).

  Args:
    theta: from `init_conv_encoder`.
    x: one image, [H, W, C].
    activation: φ.
    stride: s of every conv layer.
    impl: the convolution's implementation (`resolve_impl`).

  Returns:
    f(x), [out_dim].
  """
  h = x
  for theta_i in theta["conv"]:
    h = conv_layer(theta_i, h, activation, stride, impl)
  dense = theta["dense"]
  return networks.network(dense, h.reshape(-1),
                          networks.mlp_activations(activation, len(dense)))


def init_conv_decoder(key: jax.Array, latent_dim: int, output_shape: Sequence[int],
                      channels: Sequence[int], hidden_widths: Sequence[int],
                      activation: activations_lib.ActivationLike = "relu",
                      kernel_size: int = KERNEL_SIZE, dtype=jnp.float32) -> dict:
  """θ of `conv_decoder`, the mirror image of `init_conv_encoder`.

  Args:
    key: a `jax.random` key.
    latent_dim: d, the input width.
    output_shape: (H, W, C) of the image it produces.
    channels: the *encoder's* channels C'_1, …, C'_n; the decoder runs them
      backwards: C'_n → … → C'_1 → C.
    hidden_widths: the *encoder's* dense hidden widths; the decoder's dense
      widths are (d, *reversed(hidden_widths), H'W'C'_n).
    activation: φ of every layer but the last.
    kernel_size: k.
    dtype: parameter dtype.

  Returns:
    {"dense": θ of the dense network, "conv_transpose": [(K_1, b_1), …]}, with
    K_i ∈ ℝ^{k×k×C_out×C_in}.
  """
  dense_key, conv_key = jax.random.split(key)
  flat = math.prod(conv_output_shape(output_shape, channels))
  widths = (latent_dim, *reversed(tuple(hidden_widths)), flat)
  dense = networks.init(dense_key, widths, activation, dtype)
  path = (*reversed(tuple(channels)), int(output_shape[2]))
  conv_transpose = []
  for i, (in_channels, out_channels) in enumerate(zip(path[:-1], path[1:])):
    last = i == len(path) - 2
    shape = (kernel_size, kernel_size, out_channels, in_channels)
    # Each output position of a stride-s transposed conv sums (k/s)² taps.
    fan_in = max(1, (kernel_size // STRIDE) ** 2 * in_channels)
    kernel = _init_kernel(jax.random.fold_in(conv_key, i), shape, fan_in,
                          kernel_size ** 2 * out_channels,
                          "identity" if last else activation, dtype)
    conv_transpose.append((kernel, jnp.zeros((out_channels,), dtype)))
  return {"dense": dense, "conv_transpose": conv_transpose}


def conv_decoder(theta: dict, z: jax.Array, output_shape: Sequence[int],
                 activation: activations_lib.ActivationLike = "relu",
                 stride: int = STRIDE, impl: str | None = None) -> jax.Array:
  """g(z) = Hᵀ_1 ∘ … ∘ Hᵀ_n ∘ reshape ∘ D_m ∘ … ∘ D_1 (z) for one latent z.

  All dense layers D_j and all transposed conv layers use φ = `activation`
  except the last transposed layer, which is affine (its output are logits or
  means).

  Args:
    theta: from `init_conv_decoder`.
    z: one latent, [d].
    output_shape: (H, W, C).
    activation: φ.
    stride: s.
    impl: the convolution's implementation (`resolve_impl`).

  Returns:
    g(z), [H, W, C].
  """
  layers = theta["conv_transpose"]
  height, width = output_shape[0] // stride ** len(layers), output_shape[1] // stride ** len(layers)
  h = networks.network(theta["dense"], z, activation)
  h = h.reshape(height, width, layers[0][0].shape[3])
  for i, theta_i in enumerate(layers):
    h = conv_transpose_layer(theta_i, h, "identity" if i == len(layers) - 1 else activation,
                             stride, impl)
  return h
