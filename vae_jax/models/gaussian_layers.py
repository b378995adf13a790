"""Gaussian stochastic layers: N(μ(h), diag σ²(h)) with (μ, log σ²) from a φ-deep network.

One class serves every conditional Gaussian of a VAE: the posterior
q(z₁|x), an upper posterior q(z_{l+1}|z_l), and a conditional prior
p(z_l|z_{l+1}) of a hierarchy. Its network f maps the conditioning value h to
2d numbers, f(h) = (μ(h), log σ²(h)) ∈ ℝ^{2d}, with an affine last layer (two
stacked heads h_m → d); we parameterise the *log-variance*, which ranges over
all of ℝ, so the heads need no constraint. Sampling is reparameterised:
z = μ + σ ⊙ ε, ε ~ N(0, I), σ = exp(½ log σ²), a differentiable function of
the parameters for a fixed ε.

Widths: with hidden widths (h_1, …, h_m) the network is
(n, h_1, …, h_m, 2d) for an input of width n (or, with conv layers first, of
the flattened conv features F). Which width lemma applies depends on the
role: an encoder (Lemma 2.1.1, non-increasing) or a decoder (Lemma 2.1.2,
non-decreasing); `check_widths` takes the role.

The statistics (μ, log σ²) are computed once per conditioning value
(`stats`); `sample` and `log_prob` then work on them, so drawing k samples of
one x runs the network once.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from vae_jax.models import distributions
from vae_jax.nn import autoencoders
from vae_jax.nn import conv as conv_lib
from vae_jax.nn import networks

Stats = tuple[jax.Array, jax.Array]   # (μ, log σ²), each [d]


@dataclasses.dataclass(frozen=True)
class GaussianLayer:
  """A conditional diagonal Gaussian N(μ(h), diag σ²(h)).

  Attributes:
    input_dim: the width n of h (flattened).
    hidden_widths: h_1, …, h_m of the network's hidden layers.
    latent_dim: d.
    activation: φ of the hidden layers (a registered name or a callable).
    input_shape: the shape of h for conv layers (e.g. (28, 28, 1)).
    conv_channels: channels of the conv φ-layers applied first; () for none.
    heads: 2 (μ and log σ²); 1 for a deterministic code network (μ only).
  """
  input_dim: int
  hidden_widths: tuple
  latent_dim: int
  activation: Any = "relu"
  input_shape: tuple = ()
  conv_channels: tuple = ()
  heads: int = 2

  @property
  def feature_dim(self) -> int:
    """Width of the first dense layer's input: n, or H'W'C' after the conv layers."""
    if self.conv_channels:
      return math.prod(conv_lib.conv_output_shape(self.input_shape, self.conv_channels))
    return self.input_dim

  @property
  def widths(self) -> tuple:
    """Dense widths (n or F, h_1, …, h_m, 2d); (…, d) with one head."""
    return (self.feature_dim, *self.hidden_widths, self.heads * self.latent_dim)

  def check_widths(self, role: str) -> None:
    """Checks one head (…, h_m, d) as an encoder (Lemma 2.1.1) or a decoder (Lemma 2.1.2)."""
    head = (self.feature_dim, *self.hidden_widths, self.latent_dim)
    check = autoencoders.check_encoder_widths if role == "encoder" else autoencoders.check_decoder_widths
    check(head)

  def init(self, key: jax.Array) -> Any:
    """The network's θ: a list of (W, b), or the conv encoder's dict."""
    if self.conv_channels:
      return conv_lib.init_conv_encoder(key, self.input_shape, self.conv_channels,
                                        self.hidden_widths, self.heads * self.latent_dim, self.activation)
    return networks.init(key, self.widths, networks.mlp_activations(self.activation, len(self.widths) - 1))

  def stats(self, theta: Any, h: jax.Array) -> Stats:
    """(μ(h), log σ²(h)) of one conditioning value h, [n] → ([d], [d])."""
    if self.conv_channels:
      out = conv_lib.conv_encoder(theta, h.reshape(self.input_shape), self.activation)
    else:
      out = networks.network(theta, h, networks.mlp_activations(self.activation, len(theta)))
    return out[:self.latent_dim], out[self.latent_dim:]

  @staticmethod
  def sample(stats: Stats, key: jax.Array, temperature: float | jax.Array = 1.0) -> jax.Array:
    """z = μ + T σ ⊙ ε, ε ~ N(0, I) from `key` (T = 1: a sample of the layer)."""
    mu, log_var = stats
    epsilon = jax.random.normal(key, mu.shape, mu.dtype)
    return mu + temperature * jnp.exp(0.5 * log_var) * epsilon

  @staticmethod
  def log_prob(stats: Stats, z: jax.Array) -> jax.Array:
    """log N(z; μ, diag σ²), summed over the d coordinates."""
    return distributions.gaussian_log_prob(z, *stats)

  def sample_and_log_prob(self, theta: Any, h: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(z, log q(z|h)) for one h and one key."""
    stats = self.stats(theta, h)
    z = self.sample(stats, key)
    return z, self.log_prob(stats, z)
