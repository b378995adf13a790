"""Generation with a trained VAE: prior samples, interpolations, traversals.

* Samples with temperature T: z = T ε, ε ~ N(0, I_d), shown as E[x | z]
  (`VAE.sample`); one ε per column for every T, so a column shows the same
  latent direction at growing scale.
* Interpolation between the codes z₀ = μ(x₀), z₁ = μ(x₁), t ∈ [0, 1]:
  linear  z_t = (1 − t) z₀ + t z₁, and
  spherical (slerp, Shoemake 1985)
      z_t = sin((1 − t) Ω) / sin Ω · z₀ + sin(t Ω) / sin Ω · z₁,
      cos Ω = ⟨z₀, z₁⟩ / (‖z₀‖ ‖z₁‖),
  which follows the great circle: for ‖z₀‖ = ‖z₁‖ its norm stays constant,
  where the linear path cuts through the low-norm centre that the prior
  N(0, I) rarely produces in high dimensions.
* Traversal of latent dimension j: z = μ(x) with z_j replaced by each value
  of a grid (e.g. −3..3, in prior standard deviations).
* Active units (Burda et al. 2016): A_j = Var_x(E_q[z_j | x]); a dimension
  with A_j < 0.01 is inactive (its code ignores the image).

Grids are written with `vae_jax.plots.image_grid`.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.applications import compression
from vae_jax.models import vae as vae_lib

INTERPOLATIONS = ("linear", "spherical")


def lerp(z0: jax.Array, z1: jax.Array, t) -> jax.Array:
  """(1 − t) z₀ + t z₁."""
  return (1.0 - t) * z0 + t * z1


def slerp(z0: jax.Array, z1: jax.Array, t, eps: float = 1e-6) -> jax.Array:
  """Spherical interpolation; the linear one when z₀, z₁ are (anti)parallel within eps."""
  cos_omega = jnp.dot(z0, z1) / jnp.maximum(jnp.linalg.norm(z0) * jnp.linalg.norm(z1), 1e-12)
  omega = jnp.arccos(jnp.clip(cos_omega, -1.0, 1.0))
  sin_omega = jnp.sin(omega)
  safe = jnp.where(sin_omega > eps, sin_omega, 1.0)
  spherical = (jnp.sin((1.0 - t) * omega) * z0 + jnp.sin(t * omega) * z1) / safe
  return jnp.where(sin_omega > eps, spherical, lerp(z0, z1, t))


def interpolation_path(z0, z1, num_steps: int, method: str = "linear") -> jax.Array:
  """Latents at t = 0, 1/(n−1), …, 1 between z₀ and z₁ → [n, d]."""
  if method not in INTERPOLATIONS:
    raise ValueError(f"method={method!r} is unknown; choose one of {', '.join(INTERPOLATIONS)}.")
  if num_steps < 2:
    raise ValueError(f"num_steps={num_steps} must be ≥ 2 (the two end points).")
  z0, z1 = jnp.asarray(z0), jnp.asarray(z1)
  chex.assert_rank(z0, 1)
  chex.assert_equal_shape([z0, z1])
  fn = lerp if method == "linear" else slerp
  ts = jnp.linspace(0.0, 1.0, num_steps)
  return jax.vmap(fn, in_axes=(None, None, 0))(z0, z1, ts)


def temperature_grid(model: vae_lib.VAE, params, key: jax.Array, temperatures,
                     num_per_row: int = 10) -> np.ndarray:
  """Rows of `VAE.sample` at each temperature with the same ε → [len(T)·n, D]."""
  return np.concatenate([np.asarray(model.sample(params, key, num_per_row, float(t)))
                         for t in temperatures])


def interpolation_grid(model: vae_lib.VAE, params, starts, ends, num_steps: int = 10,
                       method: str = "linear") -> np.ndarray:
  """One row per pair (starts[i], ends[i]) of images, decoded along the path → [P·n, D]."""
  chex.assert_shape([starts, ends], (None, model.data_dim))
  chex.assert_equal_shape([starts, ends])
  z0 = compression.latent_means(model, params, starts)
  z1 = compression.latent_means(model, params, ends)
  paths = np.concatenate([np.asarray(interpolation_path(a, b, num_steps, method))
                          for a, b in zip(z0, z1)])
  return compression.decode_latents(model, params, paths)


def traversal_grid(model: vae_lib.VAE, params, image, dims, values) -> np.ndarray:
  """One row per dimension j in `dims`: μ(image) with z_j set to each value → [len(dims)·V, D]."""
  chex.assert_shape(image, (model.data_dim,))
  chex.assert_rank(values, 1)
  z = compression.latent_means(model, params, np.asarray(image)[None])[0]
  values = np.asarray(values, np.float32)
  rows = []
  for j in dims:
    row = np.repeat(z[None], len(values), axis=0)
    row[:, j] = values
    rows.append(row)
  return compression.decode_latents(model, params, np.concatenate(rows))


def active_units(means) -> np.ndarray:
  """A_j = Var_x(μ_j(x)) over the examples of means [N, d] → [d]."""
  chex.assert_rank(means, 2)
  return np.asarray(means, np.float64).var(axis=0)
