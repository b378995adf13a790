"""Log densities of the VAE's prior, encoder and decoders, and the Gaussian KL.

The variational autoencoder needs three kinds of distribution:

* the prior p(z) = N(0, I) on the latent space ℝ^d (`standard_normal_log_prob`);
* the encoder q_φ(z|x) = N(μ(x), diag σ²(x)), a diagonal Gaussian
  parameterised by its mean and its *log-variance* log σ²
  (`gaussian_log_prob`, `gaussian_kl_to_standard`);
* the decoder p_θ(x|z), a product over the D pixels of one of
  Bernoulli(sigmoid(ℓ)) (`bernoulli_log_prob`), N(m, σ²)
  (`gaussian_log_prob` again) or the continuous Bernoulli CB(sigmoid(ℓ))
  (`continuous_bernoulli_log_prob`, `continuous_bernoulli_mean`).

Every function is written for *one* example: its arguments share a shape
[..., d] and it returns the log density of the whole vector, i.e. the sum over
the last axis (the coordinates are independent). Leading axes, if any, are
kept, so the functions also work on a stack of samples [k, d] → [k].
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2.0 * math.pi)

# Below this |ℓ|/2 the continuous Bernoulli's normaliser and mean are taken
# from their Taylor series (see `continuous_bernoulli_log_normalizer`).
_CB_TAYLOR_CUTOFF = 0.1


def gaussian_log_prob(z: jax.Array, mu: jax.Array, log_var: jax.Array) -> jax.Array:
  """log N(z; μ, diag σ²) = −½ Σ_j [log 2π + log σ²_j + (z_j − μ_j)² / σ²_j].

  Used for the encoder q_φ(z|x) and for Gaussian decoders p_θ(x|z) (there z is
  the image x, μ the decoder's mean and log σ² its fixed or learned
  log-variance).

  Args:
    z: the point, [..., d].
    mu: the mean μ, [..., d].
    log_var: the log-variance log σ², [..., d] (or broadcastable to it).

  Returns:
    The log density, summed over the last axis: shape [...].
  """
  squared = jnp.square(z - mu) * jnp.exp(-log_var)
  return -0.5 * jnp.sum(LOG_2PI + log_var + squared, axis=-1)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
  """log N(z; 0, I) = −½ Σ_j [log 2π + z_j²], the prior p(z).

  Args:
    z: the point, [..., d].

  Returns:
    The log density, summed over the last axis: shape [...].
  """
  return -0.5 * jnp.sum(LOG_2PI + jnp.square(z), axis=-1)


def gaussian_kl_to_standard(mu: jax.Array, log_var: jax.Array) -> jax.Array:
  """KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σ_j (μ_j² + σ_j² − log σ_j² − 1).

  The closed form of the KL term of the ELBO when the encoder is a diagonal
  Gaussian and the prior is standard normal.

  Args:
    mu: the mean μ, [..., d].
    log_var: the log-variance log σ², [..., d].

  Returns:
    The divergence (≥ 0, = 0 iff μ = 0 and σ = 1), summed over the last axis.
  """
  return 0.5 * jnp.sum(jnp.square(mu) + jnp.exp(log_var) - log_var - 1.0, axis=-1)


def bernoulli_log_prob(x: jax.Array, logits: jax.Array) -> jax.Array:
  """log Bern(x; λ) = Σ_j [x_j log λ_j + (1 − x_j) log(1 − λ_j)], λ = sigmoid(ℓ).

  Computed from the logits ℓ as Σ_j [x_j ℓ_j − softplus(ℓ_j)], which is exact
  and never takes the log of 0. For x ∈ {0, 1} this is the log-mass of
  binarised pixels; for grey values x ∈ [0, 1] it is the (negative) binary
  cross-entropy, which is *not* a normalised density on [0, 1] (see the
  continuous Bernoulli for that).

  Args:
    x: the pixels, [..., D], in {0, 1} (or [0, 1]).
    logits: ℓ = log(λ / (1 − λ)), [..., D].

  Returns:
    The log-likelihood, summed over the last axis: shape [...].
  """
  return jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)


def _log_u_over_tanh_u(u: jax.Array) -> jax.Array:
  """log(u / tanh u), exact at u = 0 (value 0) and for large |u|."""
  small = jnp.abs(u) < _CB_TAYLOR_CUTOFF
  # log(u / tanh u) = log cosh u − log(sinh u / u) = u²/3 − 7u⁴/90 + 62u⁶/2835 − …
  u2 = jnp.square(u)
  taylor = u2 * (1.0 / 3.0 + u2 * (-7.0 / 90.0 + u2 * (62.0 / 2835.0)))
  # u / tanh u is even, ≥ 1 and ≈ |u| for large |u| (tanh saturates to ±1).
  safe = jnp.where(small, 1.0, u)  # the double-where keeps gradients finite at u = 0
  return jnp.where(small, taylor, jnp.log(safe / jnp.tanh(safe)))


def continuous_bernoulli_log_normalizer(logits: jax.Array) -> jax.Array:
  """log C(λ) of the continuous Bernoulli, elementwise, from ℓ = logit(λ).

  C(λ) = 1 / ∫₀¹ λ^x (1 − λ)^{1−x} dx = 2 artanh(1 − 2λ) / (1 − 2λ) for
  λ ≠ ½ and C(½) = 2 (Loaiza-Ganem & Cunningham 2019). In the logit
  ℓ = log(λ / (1 − λ)) one has 1 − 2λ = −tanh(ℓ/2) and
  2 artanh(1 − 2λ) = −ℓ, so with u = ℓ/2

      log C = log 2 + log(u / tanh u).

  Written this way there is no cancellation in 1 − 2λ; the remaining 0/0 at
  λ = ½ (u = 0) is removed by the Taylor series
  log(u / tanh u) = u²/3 − 7u⁴/90 + 62u⁶/2835 + O(u⁸), used for |u| < 0.1
  (its truncation error there is below 1e-10).

  Args:
    logits: ℓ, any shape.

  Returns:
    log C(sigmoid(ℓ)), same shape (≥ log 2, equal at ℓ = 0).
  """
  return math.log(2.0) + _log_u_over_tanh_u(0.5 * logits)


def continuous_bernoulli_log_prob(x: jax.Array, logits: jax.Array) -> jax.Array:
  """log CB(x; λ) = Σ_j [log C(λ_j) + x_j log λ_j + (1 − x_j) log(1 − λ_j)].

  The continuous Bernoulli (Loaiza-Ganem & Cunningham 2019) is the normalised
  density on [0, 1] proportional to the Bernoulli's λ^x (1 − λ)^{1−x}; it is
  the correct likelihood for grey-valued pixels x ∈ [0, 1] where the plain
  Bernoulli "likelihood" is not normalised. λ = sigmoid(ℓ); see
  `continuous_bernoulli_log_normalizer` for the stable log C.

  Args:
    x: the pixels, [..., D], in [0, 1].
    logits: ℓ, [..., D].

  Returns:
    The log density, summed over the last axis: shape [...].
  """
  return bernoulli_log_prob(x, logits) + jnp.sum(
      continuous_bernoulli_log_normalizer(logits), axis=-1)


def continuous_bernoulli_mean(logits: jax.Array) -> jax.Array:
  """E[x] of CB(λ), elementwise: λ/(2λ − 1) + 1/(2 artanh(1 − 2λ)), ½ at λ = ½.

  In the logit ℓ this is 1/(1 − e^{−ℓ}) − 1/ℓ; near ℓ = 0 (|ℓ| < 0.2) the
  series ½ + ℓ/12 − ℓ³/720 + O(ℓ⁵) replaces the difference of two large terms.

  Args:
    logits: ℓ, any shape.

  Returns:
    The mean, same shape, in (0, 1).
  """
  small = jnp.abs(logits) < 2.0 * _CB_TAYLOR_CUTOFF
  safe = jnp.where(small, 1.0, logits)
  direct = -1.0 / jnp.expm1(-safe) - 1.0 / safe
  taylor = 0.5 + logits * (1.0 / 12.0 - jnp.square(logits) / 720.0)
  return jnp.where(small, taylor, direct)


def gaussian_mixture_log_prob(z: jax.Array, log_weights: jax.Array, means: jax.Array,
                              log_vars: jax.Array) -> jax.Array:
  """log Σ_k π_k N(z; μ_k, diag σ²_k) of one point z, by a logsumexp over the K components.

  Args:
    z: the point, [d].
    log_weights: log π_k, [K] (normalised: logsumexp = 0).
    means: μ_k, [K, d].
    log_vars: log σ²_k, [K, d].

  Returns:
    The scalar log density.
  """
  return jax.nn.logsumexp(log_weights + gaussian_log_prob(z[None, :], means, log_vars))
