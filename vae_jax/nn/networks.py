"""φ-neurons, φ-layers and φ-deep networks as pure functions (Def. 1.1.3–1.1.5).

Everything here is written for *one* example x ∈ ℝ^k, exactly as the thesis
writes it, and batched with `jax.vmap`:

    batched = jax.vmap(network, in_axes=(None, 0, None))
    y = batched(theta, xs, "relu")                                 # [B, n_o]

Parameters are plain pytrees: a φ-layer has θ_i = (W_i, b_i) with
W_i ∈ ℝ^{m×k}, b_i ∈ ℝ^m, and a network has θ = (θ_1, …, θ_L), a list of such
pairs. `jax.tree_util`, optax and orbax handle θ as it is.

Widths. `init(key, widths)` takes the widths (d_0, d_1, …, d_L) of every layer
*including* the input (d_0 = n_i) and the output (d_L = n_o), so a sequence of
L + 1 widths gives L layers H_1, …, H_L with H_i: ℝ^{d_{i-1}} → ℝ^{d_i}.

Activations. Def. 1.1.5 uses one φ for every layer. `network` also takes one
activation per layer; this generalises Def. 1.1.5 (the thesis's network is the
case where all L entries are equal) and is what practice needs: the last layer
is usually affine (φ = identity) so that the output can take any value.
"""

from __future__ import annotations

import functools
from typing import Sequence, Union

import chex
import jax
import jax.numpy as jnp

from vae_jax.nn import activations as activations_lib

LayerParams = tuple[jax.Array, jax.Array]     # θ_i = (W_i, b_i)
Params = list[LayerParams]                    # θ = (θ_1, …, θ_L)
Activations = Union[activations_lib.ActivationLike, Sequence[activations_lib.ActivationLike]]


def neuron(theta: tuple[jax.Array, jax.Array], x: jax.Array,
           activation: activations_lib.ActivationLike = "relu") -> jax.Array:
  """φ-neuron h(x) = φ(⟨w, x⟩ + b) (Def. 1.1.3, eq. 1.1).

  Args:
    theta: (w, b) with w ∈ ℝ^k and a scalar bias b.
    x: one input x ∈ ℝ^k.
    activation: φ, a registered name or a callable (Def. 1.1.1).

  Returns:
    The scalar h(x).
  """
  w, b = theta
  return activations_lib.get(activation)(jnp.dot(w, x) + b)


def layer(theta_i: LayerParams, x: jax.Array,
          activation: activations_lib.ActivationLike = "relu") -> jax.Array:
  """φ-layer H(x) = φ̂(W x + b) (Def. 1.1.4, eq. 1.2).

  φ̂ applies φ to each of the m coordinates: the layer is m φ-neurons with
  weights the rows of W and biases the entries of b.

  Args:
    theta_i: (W, b) with W ∈ ℝ^{m×k}, b ∈ ℝ^m.
    x: one input x ∈ ℝ^k.
    activation: φ, a registered name or a callable.

  Returns:
    H(x) ∈ ℝ^m.
  """
  weight, bias = theta_i
  chex.assert_rank([weight, bias, x], [2, 1, 1])   # one example: vmap for a batch
  return activations_lib.get(activation)(weight @ x + bias)


def layer_activations(activations: Activations, num_layers: int) -> tuple:
  """Expands one activation (Def. 1.1.5) or checks a per-layer sequence.

  Raises:
    ValueError: if a sequence's length differs from the number of layers.
  """
  if isinstance(activations, str) or callable(activations):
    return (activations,) * num_layers
  activations = tuple(activations)
  if len(activations) != num_layers:
    raise ValueError(
        f"got {len(activations)} activations for a network of {num_layers} layers;"
        " give one activation or exactly one per layer."
    )
  return activations


def mlp_activations(hidden: activations_lib.ActivationLike, num_layers: int,
                    last: activations_lib.ActivationLike = "identity") -> tuple:
  """The common choice: φ on layers 1, …, L−1 and `last` (identity) on layer L."""
  return (hidden,) * (num_layers - 1) + (last,)


def network(theta: Params, x: jax.Array, activations: Activations = "relu") -> jax.Array:
  """φ-deep network f(x) = H_L ∘ … ∘ H_1 (x) (Def. 1.1.5, eq. 1.3).

  A left fold of `layer` over θ = (θ_1, …, θ_L): x_0 = x, x_i = H_i(x_{i−1}).

  Args:
    theta: the layers' parameters (θ_1, …, θ_L).
    x: one input x ∈ ℝ^{d_0}.
    activations: one φ shared by all layers (Def. 1.1.5) or one per layer.

  Returns:
    f(x) ∈ ℝ^{d_L}.
  """
  per_layer = layer_activations(activations, len(theta))
  return functools.reduce(
      lambda h, step: layer(step[0], h, step[1]), zip(theta, per_layer), x)


def widths_of(theta: Params) -> tuple[int, ...]:
  """Reads the widths (d_0, …, d_L) off the parameter shapes."""
  if not theta:
    raise ValueError("a network needs at least one layer; θ is empty.")
  widths = [int(theta[0][0].shape[1])]
  for i, (weight, bias) in enumerate(theta, start=1):
    if weight.ndim != 2 or bias.shape != (weight.shape[0],):
      raise ValueError(
          f"layer {i} has W of shape {weight.shape} and b of shape {bias.shape};"
          " a φ-layer needs W ∈ ℝ^(m×k) and b ∈ ℝ^m.")
    if weight.shape[1] != widths[-1]:
      raise ValueError(
          f"layer {i} takes inputs of width {weight.shape[1]} but layer {i - 1}"
          f" gives width {widths[-1]}; consecutive layers must chain.")
    widths.append(int(weight.shape[0]))
  return tuple(widths)


def check_widths(widths: Sequence[int]) -> tuple[int, ...]:
  """Checks that (d_0, …, d_L) are at least two positive integers; returns them as a tuple."""
  widths = tuple(widths)
  if len(widths) < 2:
    raise ValueError(
        f"widths {widths} describe no layer; give at least (input, output).")
  for i, d in enumerate(widths):
    if not isinstance(d, int) or isinstance(d, bool) or d <= 0:
      raise ValueError(
          f"width {d!r} at position {i} of {widths} is not a positive integer.")
  return widths


_HE_ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "silu")


def init(key: jax.Array, widths: Sequence[int], activations: Activations = "relu",
         dtype=jnp.float32) -> Params:
  """Builds θ for a network of the given widths (d_0, …, d_L).

  W_i is drawn from a normal with variance 2/d_{i−1} (He) when layer i's
  activation is ReLU-like, and uniform with variance 2/(d_{i−1}+d_i) (Glorot)
  otherwise (tanh, sigmoid, softplus, identity, callables); biases start at 0.

  Args:
    key: a `jax.random` key; layer i uses `fold_in(key, i)`.
    widths: (d_0, …, d_L), input and output included.
    activations: as for `network`; selects the initialisation per layer.
    dtype: parameter dtype.

  Returns:
    θ = [(W_1, b_1), …, (W_L, b_L)].
  """
  widths = check_widths(widths)
  per_layer = layer_activations(activations, len(widths) - 1)
  theta = []
  for i, (fan_in, fan_out, act) in enumerate(zip(widths[:-1], widths[1:], per_layer)):
    layer_key = jax.random.fold_in(key, i)
    if isinstance(act, str) and act in _HE_ACTIVATIONS:
      weight = jax.random.normal(layer_key, (fan_out, fan_in), dtype) * jnp.sqrt(2.0 / fan_in)
    else:
      limit = jnp.sqrt(6.0 / (fan_in + fan_out))
      weight = jax.random.uniform(layer_key, (fan_out, fan_in), dtype, -limit, limit)
    theta.append((weight, jnp.zeros((fan_out,), dtype)))
  return theta


def num_parameters(theta) -> int:
  """Number of scalars in any parameter pytree."""
  return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(theta))
