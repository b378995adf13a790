"""Pixel likelihoods p_θ(x|z): the decoder's output g_θ(z) turned into a density.

With ℓ = g_θ(z) the decoder network's output for one latent, the likelihood of
one flattened example x ∈ ℝ^D is one of

* "bernoulli":            x_j ~ Bern(sigmoid(ℓ_j)) (binarised data);
* "gaussian":             x_j ~ N(ℓ_j, σ²), σ = `gaussian_scale` fixed;
* "gaussian_learned":     x_j ~ N(ℓ_j, σ_j²), one learned log σ_j per pixel
                          (params["log_scale"], floored at `MIN_LOG_SCALE`);
* "continuous_bernoulli": x_j ~ CB(sigmoid(ℓ_j)), a normalised density on
                          [0, 1] (grey-valued data).

The decoder network itself belongs to the model (`vae_jax.models.vae`); this
part only owns the likelihood's own parameters (the learned log-scale) and
the formulas.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from vae_jax.models import distributions

KINDS = ("bernoulli", "gaussian", "gaussian_learned", "continuous_bernoulli")
# log σ of the learned-variance Gaussian decoder is clipped below at this value
# (σ ≥ e^{-5} ≈ 0.0067): pixels that are constant in the data (MNIST's border)
# would otherwise drive σ → 0 and the likelihood to +∞.
MIN_LOG_SCALE = -5.0


@dataclasses.dataclass(frozen=True)
class Likelihood:
  """p(x|ℓ) of one flattened example, ℓ the decoder's output.

  Attributes:
    kind: one of `KINDS`.
    data_dim: D, the number of pixels.
    gaussian_scale: σ of the fixed-variance Gaussian.
  """
  kind: str = "bernoulli"
  data_dim: int = 784
  gaussian_scale: float = 0.1

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(
          f"model.likelihood={self.kind!r} is unknown; choose one of {', '.join(KINDS)}.")

  def init(self, key: jax.Array) -> dict:
    """{"log_scale": zeros [D]} (σ = 1) for "gaussian_learned", else {}."""
    del key
    if self.kind == "gaussian_learned":
      return {"log_scale": jnp.zeros((self.data_dim,), jnp.float32)}
    return {}

  def log_prob(self, params: dict, x: jax.Array, decoded: jax.Array) -> jax.Array:
    """log p(x|z), summed over the D pixels, from decoded = g_θ(z).

    * bernoulli: Σ_j [x_j ℓ_j − softplus(ℓ_j)];
    * gaussian: −½ Σ_j [log 2π + 2 log σ + (x_j − m_j)²/σ²];
    * gaussian_learned: the same with σ_j = exp(max(log_scale_j, MIN_LOG_SCALE));
    * continuous_bernoulli: Σ_j [log C(λ_j) + x_j log λ_j + (1 − x_j) log(1 − λ_j)].

    The Gaussian and continuous Bernoulli values are log *densities* on ℝ^D
    or [0, 1]^D and are not comparable with the Bernoulli's log-mass.

    Args:
      params: this part's parameters (`init`).
      x: one flattened example, [D].
      decoded: the decoder's output, [D].

    Returns:
      The scalar log p(x|z).
    """
    if self.kind == "bernoulli":
      return distributions.bernoulli_log_prob(x, decoded)
    if self.kind == "continuous_bernoulli":
      return distributions.continuous_bernoulli_log_prob(x, decoded)
    if self.kind == "gaussian":
      log_var = jnp.full_like(decoded, 2.0 * math.log(self.gaussian_scale))
    else:
      log_var = 2.0 * jnp.maximum(params["log_scale"], MIN_LOG_SCALE)
    return distributions.gaussian_log_prob(x, decoded, log_var)

  def mean(self, decoded: jax.Array) -> jax.Array:
    """E[x|z] for display, in [0, 1]: sigmoid(ℓ), the CB mean, or the Gaussian mean clipped."""
    if self.kind == "bernoulli":
      return jax.nn.sigmoid(decoded)
    if self.kind == "continuous_bernoulli":
      return distributions.continuous_bernoulli_mean(decoded)
    return jnp.clip(decoded, 0.0, 1.0)
