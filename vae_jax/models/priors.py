"""Priors p(z) on the top latent: standard normal, a mixture of Gaussians, the VampPrior.

Every prior is used in two steps. `prepare(learned, encode)` turns the
prior's learned parameters into the parameters of the distribution itself,
once per batch (for the VampPrior that is K encoder passes, which must not be
repeated per example); `log_prob(params, z)` and `sample(params, key)` then
work on one z. `encode` maps a stack of inputs [K, D] to posterior statistics
(μ [K, d], log σ² [K, d]); only the VampPrior uses it.

* `StandardNormal`: p(z) = N(0, I).
* `GaussianMixture`: p(z) = Σ_k π_k N(μ_k, diag σ²_k), with learned π (softmax
  of logits), μ_k and log σ²_k: the simple baseline of a learned prior.
* `VampPrior` (Tomczak & Welling 2018): p(z) = (1/K) Σ_k q(z|u_k), the
  aggregate posterior of K learned pseudo-inputs u_k ∈ [0, 1]^D. As in the
  paper u_k = hardtanh(p_k) clipped to [0, 1] with p_k initialised
  N(0.05, 0.01²) (their `pseudoinputs_mean`/`pseudoinputs_std`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp

from vae_jax.models import distributions

KINDS = ("standard_normal", "mixture", "vampprior")
Encode = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


def _sample_mixture(params: dict, key: jax.Array, temperature) -> jax.Array:
  component_key, noise_key = jax.random.split(key)
  k = jax.random.categorical(component_key, params["log_weights"])
  mu, log_var = params["means"][k], params["log_vars"][k]
  return mu + temperature * jnp.exp(0.5 * log_var) * jax.random.normal(noise_key, mu.shape, mu.dtype)


def _mixture_log_prob(params: dict, z: jax.Array) -> jax.Array:
  return distributions.gaussian_mixture_log_prob(
      z, params["log_weights"], params["means"], params["log_vars"])


@dataclasses.dataclass(frozen=True)
class StandardNormal:
  """p(z) = N(0, I_d)."""
  latent_dim: int

  def init(self, key: jax.Array) -> dict:
    del key
    return {}

  def prepare(self, learned: dict, encode: Encode | None = None) -> dict:
    del learned, encode
    return {}

  def log_prob(self, params: dict, z: jax.Array) -> jax.Array:
    del params
    return distributions.standard_normal_log_prob(z)

  def sample(self, params: dict, key: jax.Array, temperature=1.0) -> jax.Array:
    del params
    return temperature * jax.random.normal(key, (self.latent_dim,))


@dataclasses.dataclass(frozen=True)
class GaussianMixture:
  """p(z) = Σ_k π_k N(z; μ_k, diag σ²_k) with learned logits, means and log-variances."""
  latent_dim: int
  num_components: int

  def init(self, key: jax.Array) -> dict:
    return {"logits": jnp.zeros((self.num_components,), jnp.float32),
            "means": jax.random.normal(key, (self.num_components, self.latent_dim), jnp.float32),
            "log_vars": jnp.zeros((self.num_components, self.latent_dim), jnp.float32)}

  def prepare(self, learned: dict, encode: Encode | None = None) -> dict:
    del encode
    return {"log_weights": jax.nn.log_softmax(learned["logits"]),
            "means": learned["means"], "log_vars": learned["log_vars"]}

  def log_prob(self, params: dict, z: jax.Array) -> jax.Array:
    return _mixture_log_prob(params, z)

  def sample(self, params: dict, key: jax.Array, temperature=1.0) -> jax.Array:
    return _sample_mixture(params, key, temperature)


@dataclasses.dataclass(frozen=True)
class VampPrior:
  """p(z) = (1/K) Σ_k q(z|u_k) with K learned pseudo-inputs u_k (Tomczak & Welling 2018)."""
  latent_dim: int
  num_components: int
  input_dim: int
  init_mean: float = 0.05
  init_std: float = 0.01

  def init(self, key: jax.Array) -> dict:
    noise = jax.random.normal(key, (self.num_components, self.input_dim), jnp.float32)
    return {"pseudo_inputs": self.init_mean + self.init_std * noise}

  def pseudo_inputs(self, learned: dict) -> jax.Array:
    """u_k = hardtanh(p_k) on [0, 1], [K, D]."""
    return jnp.clip(learned["pseudo_inputs"], 0.0, 1.0)

  def prepare(self, learned: dict, encode: Encode | None = None) -> dict:
    if encode is None:
      raise ValueError("the VampPrior needs the posterior's encode function.")
    means, log_vars = encode(self.pseudo_inputs(learned))
    log_weights = jnp.full((self.num_components,), -math.log(self.num_components), means.dtype)
    return {"log_weights": log_weights, "means": means, "log_vars": log_vars}

  def log_prob(self, params: dict, z: jax.Array) -> jax.Array:
    return _mixture_log_prob(params, z)

  def sample(self, params: dict, key: jax.Array, temperature=1.0) -> jax.Array:
    return _sample_mixture(params, key, temperature)


def make(kind: str, latent_dim: int, num_components: int, input_dim: int):
  """The prior named `kind` (one of `KINDS`) on ℝ^latent_dim."""
  if kind == "standard_normal":
    return StandardNormal(latent_dim)
  if num_components < 1:
    raise ValueError(
        f"model.prior_components={num_components}: a {kind} prior needs K ≥ 1 components;"
        " use e.g. 500 (the VampPrior paper's K).")
  if kind == "mixture":
    return GaussianMixture(latent_dim, num_components)
  if kind == "vampprior":
    return VampPrior(latent_dim, num_components, input_dim)
  raise ValueError(f"model.prior={kind!r} is unknown; choose one of {', '.join(KINDS)}.")
