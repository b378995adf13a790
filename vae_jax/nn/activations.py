"""Activation functions φ: ℝ → ℝ (Def. 1.1.1, Ex. 1.1.2).

Def. 1.1.1 calls any *non-constant, continuous* function φ: ℝ → ℝ an
activation function. The registry below holds the usual zoo of Ex. 1.1.2 by
name; `get` turns a name (or a user's callable) into the function, and
`register` adds a new one after checking Def. 1.1.1.

What can and cannot be checked. A function is only ever evaluated at finitely
many points, so `check_activation` checks Def. 1.1.1 *numerically* on a grid
of [-GRID_RADIUS, GRID_RADIUS]:

* non-constant: the values on the grid are not all equal (up to float
  tolerance). A function that is constant on the grid but varies outside it
  (e.g. φ(x) = max(0, x - 1e6)) is rejected, although Def. 1.1.1 accepts it.
* continuous: on a grid of spacing h, no step |φ(x+h) - φ(x)| exceeds
  `JUMP_TOLERANCE` times the function's range over the grid. This catches jumps
  such as the Heaviside step; a discontinuity between grid points, or one
  smaller than the tolerance, cannot be seen, and continuity outside the grid
  is not checked at all.
* finiteness: every value on the grid is finite.
"""

from __future__ import annotations

from typing import Callable, Union

import jax
import jax.numpy as jnp
import numpy as np

Activation = Callable[[jax.Array], jax.Array]
ActivationLike = Union[str, Activation]

GRID_RADIUS = 10.0
GRID_SIZE = 20001
JUMP_TOLERANCE = 0.05


def identity(x: jax.Array) -> jax.Array:
  """The identity φ(x) = x, used on a network's last (affine) layer."""
  return x


def leaky_relu(x: jax.Array) -> jax.Array:
  """φ(x) = max(x, 0.01 x)."""
  return jax.nn.leaky_relu(x, negative_slope=0.01)


def gelu(x: jax.Array) -> jax.Array:
  """The exact GELU φ(x) = x Φ(x), Φ the standard normal CDF."""
  return jax.nn.gelu(x, approximate=False)


_REGISTRY: dict[str, Activation] = {
    "relu": jax.nn.relu,
    "leaky_relu": leaky_relu,
    "elu": jax.nn.elu,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "gelu": gelu,
    "silu": jax.nn.silu,
    "identity": identity,
}


def names() -> tuple[str, ...]:
  """Names of every registered activation, sorted."""
  return tuple(sorted(_REGISTRY))


def check_activation(fn: Activation, name: str = "the activation") -> None:
  """Checks Def. 1.1.1 (non-constant, continuous) numerically on a grid.

  Args:
    fn: a function ℝ → ℝ applied elementwise to a float array.
    name: how to call the function in the error message.

  Raises:
    ValueError: if `fn` fails on an array, changes its shape, gives a
      non-finite value, is constant on the grid or jumps (see module doc).
  """
  grid = np.linspace(-GRID_RADIUS, GRID_RADIUS, GRID_SIZE, dtype=np.float32)
  try:
    values = np.asarray(fn(jnp.asarray(grid)), dtype=np.float64)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f"{name} is not an activation function: applying it to a float array"
        f" failed ({type(e).__name__}: {e}); it must map arrays elementwise."
    ) from e
  if values.shape != grid.shape:
    raise ValueError(
        f"{name} is not an activation function: it changed the shape"
        f" {grid.shape} to {values.shape}; it must act elementwise (Def. 1.1.1)."
    )
  if not np.all(np.isfinite(values)):
    raise ValueError(
        f"{name} is not an activation function: it gives non-finite values on"
        f" [-{GRID_RADIUS}, {GRID_RADIUS}]; use a function ℝ → ℝ (Def. 1.1.1)."
    )
  value_range = float(values.max() - values.min())
  if value_range <= 1e-6 * max(1.0, float(np.abs(values).max())):
    raise ValueError(
        f"{name} is constant on [-{GRID_RADIUS}, {GRID_RADIUS}]; Def. 1.1.1"
        " requires a non-constant activation function: pick another φ."
    )
  largest_step = float(np.abs(np.diff(values)).max())
  if largest_step > JUMP_TOLERANCE * value_range:
    where = float(grid[int(np.abs(np.diff(values)).argmax())])
    raise ValueError(
        f"{name} jumps by {largest_step:.3g} near x={where:.3g}; Def. 1.1.1"
        " requires a continuous activation function: pick a continuous φ."
    )


def register(name: str, fn: Activation) -> None:
  """Adds `fn` to the registry under `name` after checking Def. 1.1.1.

  Raises:
    ValueError: if the name is taken or `fn` fails `check_activation`.
  """
  if name in _REGISTRY:
    raise ValueError(f"activation {name!r} is already registered; choose another name.")
  check_activation(fn, f"activation {name!r}")
  _REGISTRY[name] = fn


def get(activation: ActivationLike) -> Activation:
  """Returns the activation function for a registered name or a callable.

  A callable that is not in the registry is checked with `check_activation`.

  Raises:
    ValueError: for an unknown name or a callable that fails Def. 1.1.1.
  """
  if isinstance(activation, str):
    try:
      return _REGISTRY[activation]
    except KeyError:
      raise ValueError(
          f"unknown activation {activation!r}; choose one of {', '.join(names())}"
          " or register a new one with vae_jax.nn.activations.register."
      ) from None
  if not callable(activation):
    raise ValueError(
        f"an activation must be a name or a callable, got {type(activation).__name__}."
    )
  if activation not in _REGISTRY.values():
    check_activation(activation, getattr(activation, "__name__", repr(activation)))
  return activation
