"""The variational autoencoder: encoder q_φ(z|x), prior p(z), decoder p_θ(x|z).

The generative model is

    z ~ p(z) = N(0, I_d),        x | z ~ p_θ(x|z) = ∏_{j=1}^D p(x_j | g_θ(z)_j),

with g_θ a decoder network (Lemma 2.1.2 widths) and the pixel likelihood one of

* "bernoulli":            x_j ~ Bern(sigmoid(ℓ_j)), ℓ = g_θ(z) the logits
                          (binarised data);
* "gaussian":             x_j ~ N(m_j, σ²), m = g_θ(z), σ = `gaussian_scale`
                          fixed;
* "gaussian_learned":     x_j ~ N(m_j, σ_j²), one learned log σ_j per pixel
                          (params["log_scale"], floored at `MIN_LOG_SCALE`);
* "continuous_bernoulli": x_j ~ CB(sigmoid(ℓ_j)), a normalised density on
                          [0, 1] (grey-valued data).

The approximate posterior (the probabilistic encoder) is

    q_φ(z|x) = N(μ(x), diag σ²(x)),   (μ(x), log σ²(x)) = f_φ(x) ∈ ℝ^{2d},

with f_φ an encoder network whose last layer is affine. We parameterise the
*log-variance* log σ² (not σ, not a softplus scale): it ranges over all of ℝ,
so the affine head needs no constraint, and both the KL term and log q are
simple in it. The reparameterisation z = μ + σ ⊙ ε, ε ~ N(0, I), σ = exp(½ log σ²)
makes z a differentiable function of φ for a fixed ε.

Widths. With input dimension D = prod(input_shape) and hidden widths
(h_1, …, h_m), the encoder has widths (D, h_1, …, h_m, 2d) and the decoder
(d, h_m, …, h_1, D). The encoder's last layer h_m → 2d is two stacked affine
heads h_m → d (one for μ, one for log σ²), so each head is an encoder of
widths (D, h_1, …, h_m, d), and that is what Lemma 2.1.1 checks; the decoder
is checked with Lemma 2.1.2. For `architecture="conv"` the same holds after
the conv layers with D replaced by the flattened feature size F = H'W'C'
(see `vae_jax.nn.conv`).

`stochastic=False` gives the deterministic autoencoder of Ch. 2: the encoder
outputs the code f(x) ∈ ℝ^d only (widths (D, h_1, …, h_m, d)) and there is no
q(z|x); it is trained with `objectives.autoencoder_loss`.

The model is a frozen dataclass: hashable, so it can be a static argument or a
closed-over constant of `jax.jit`. It holds no parameters; every method is a
pure function of an explicit parameter pytree and works on *one* example
(batch with `jax.vmap`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from vae_jax.nn import activations as activations_lib
from vae_jax.nn import autoencoders
from vae_jax.nn import conv as conv_lib
from vae_jax.models import distributions
from vae_jax.nn import networks

ARCHITECTURES = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned", "continuous_bernoulli")
# log σ of the learned-variance Gaussian decoder is clipped below at this value
# (σ ≥ e^{-5} ≈ 0.0067): pixels that are constant in the data (MNIST's border)
# would otherwise drive σ → 0 and the likelihood to +∞.
MIN_LOG_SCALE = -5.0

_FIELDS = ("architecture", "hidden_widths", "latent_dim", "activation", "likelihood",
           "gaussian_scale", "conv_channels", "stochastic")


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class VAE:
  """Specification of a VAE (or, with stochastic=False, a deterministic AE).

  Attributes:
    input_shape: shape of one image; x is given flattened, [prod(input_shape)],
      with values in [0, 1].
    architecture: "mlp" (dense φ-layers) or "conv" (`vae_jax.nn.conv`).
    hidden_widths: the encoder's hidden widths h_1 ≥ … ≥ h_m; the decoder uses
      them reversed.
    latent_dim: d, the dimension of z.
    activation: φ of every hidden layer (a registered name or a callable).
    likelihood: the decoder's pixel distribution, one of `LIKELIHOODS`.
    gaussian_scale: σ of the fixed-variance Gaussian decoder.
    conv_channels: channels of the conv layers (architecture "conv").
    stochastic: False for the deterministic autoencoder of Ch. 2.
  """
  input_shape: tuple = (28, 28, 1)
  architecture: str = "mlp"
  hidden_widths: tuple = (512, 256)
  latent_dim: int = 32
  activation: Any = "relu"
  likelihood: str = "bernoulli"
  gaussian_scale: float = 0.1
  conv_channels: tuple = (32, 64)
  stochastic: bool = True

  def __post_init__(self):
    for name in ("input_shape", "hidden_widths", "conv_channels"):
      value = getattr(self, name)
      if isinstance(value, (list, tuple)):
        object.__setattr__(self, name, tuple(value))
      else:
        raise ValueError(f"model.{name} must be a tuple, got {value!r}.")
    if not _is_int(self.latent_dim) or self.latent_dim < 1:
      raise ValueError(f"model.latent_dim must be an integer ≥ 1, got {self.latent_dim!r}.")
    if self.architecture not in ARCHITECTURES:
      raise ValueError(
          f"model.architecture={self.architecture!r} is unknown; choose one of"
          f" {', '.join(ARCHITECTURES)}.")
    if self.likelihood not in LIKELIHOODS:
      raise ValueError(
          f"model.likelihood={self.likelihood!r} is unknown; choose one of"
          f" {', '.join(LIKELIHOODS)}.")
    try:
      activations_lib.get(self.activation)
    except ValueError as e:
      raise ValueError(f"model.activation={self.activation!r} is invalid: {e}") from None
    if not isinstance(self.stochastic, bool):
      raise ValueError(f"model.stochastic must be True or False, got {self.stochastic!r}.")
    if not (isinstance(self.gaussian_scale, (int, float)) and self.gaussian_scale > 0):
      raise ValueError(f"model.gaussian_scale must be a number > 0, got {self.gaussian_scale!r}.")
    if not self.input_shape or any(not _is_int(d) or d < 1 for d in self.input_shape):
      raise ValueError(f"input_shape must hold positive integers, got {self.input_shape}.")
    if self.architecture == "conv":
      conv_lib.check_input_shape(self.input_shape, self.conv_channels)
    if any(not _is_int(h) or h < 1 for h in self.hidden_widths):
      raise ValueError(
          f"model.hidden_widths must hold positive integers, got {self.hidden_widths}.")
    head = (self.feature_dim, *self.hidden_widths, self.latent_dim)
    try:
      autoencoders.check_encoder_widths(head)
    except ValueError as e:
      raise ValueError(
          f"model.hidden_widths={self.hidden_widths} with latent_dim={self.latent_dim}"
          f" give encoder widths {head}: {e}") from None
    try:
      autoencoders.check_decoder_widths(self.decoder_widths)
    except ValueError as e:
      raise ValueError(
          f"model.hidden_widths={self.hidden_widths} with latent_dim={self.latent_dim}"
          f" give decoder widths {self.decoder_widths}: {e}") from None

  @classmethod
  def from_config(cls, model_config, input_shape) -> "VAE":
    """Builds and validates a VAE from a config (an `ml_collections.ConfigDict`).

    Args:
      model_config: a mapping with some of the fields architecture,
        hidden_widths, latent_dim, activation, likelihood, gaussian_scale,
        conv_channels, stochastic (missing ones take the defaults).
      input_shape: shape of one image, e.g. (28, 28, 1).

    Returns:
      The VAE.

    Raises:
      ValueError: a one-line message naming the bad field, its value and the
        valid choices (or the violated lemma).
    """
    values = dict(model_config.items())
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
      raise ValueError(
          f"model config has unknown field(s) {', '.join(unknown)}; valid fields:"
          f" {', '.join(_FIELDS)}.")
    for name in ("hidden_widths", "conv_channels"):
      if name in values and isinstance(values[name], list):
        values[name] = tuple(values[name])
    return cls(input_shape=tuple(input_shape), **values)

  # -- shapes ----------------------------------------------------------------

  @property
  def data_dim(self) -> int:
    """D = prod(input_shape), the length of a flattened example."""
    return math.prod(self.input_shape)

  @property
  def feature_dim(self) -> int:
    """Width of the first dense layer's input: D (mlp) or H'W'C' (conv)."""
    if self.architecture == "conv":
      return math.prod(conv_lib.conv_output_shape(self.input_shape, self.conv_channels))
    return self.data_dim

  @property
  def encoder_widths(self) -> tuple:
    """Dense widths of the encoder: (D or F, *hidden, 2d), or (…, d) if deterministic."""
    out = 2 * self.latent_dim if self.stochastic else self.latent_dim
    return (self.feature_dim, *self.hidden_widths, out)

  @property
  def decoder_widths(self) -> tuple:
    """Dense widths of the decoder: (d, *reversed(hidden), D or F)."""
    return (self.latent_dim, *reversed(self.hidden_widths), self.feature_dim)

  # -- parameters ------------------------------------------------------------

  def init(self, key: jax.Array) -> dict:
    """Initial parameters.

    Args:
      key: a `jax.random` key.

    Returns:
      {"encoder": θ_enc, "decoder": θ_dec} (+ "log_scale": zeros [D], i.e.
      σ = 1, for "gaussian_learned"). For "mlp" θ_enc, θ_dec are lists of
      (W, b); for "conv" see `conv.init_conv_encoder` / `init_conv_decoder`.
    """
    encoder_key, decoder_key = jax.random.split(key)
    if self.architecture == "conv":
      widths = self.encoder_widths
      params = {
          "encoder": conv_lib.init_conv_encoder(
              encoder_key, self.input_shape, self.conv_channels, self.hidden_widths,
              widths[-1], self.activation),
          "decoder": conv_lib.init_conv_decoder(
              decoder_key, self.latent_dim, self.input_shape, self.conv_channels,
              self.hidden_widths, self.activation),
      }
    else:
      params = {
          "encoder": networks.init(
              encoder_key, self.encoder_widths,
              networks.mlp_activations(self.activation, len(self.encoder_widths) - 1)),
          "decoder": networks.init(
              decoder_key, self.decoder_widths,
              networks.mlp_activations(self.activation, len(self.decoder_widths) - 1)),
      }
    if self.likelihood == "gaussian_learned":
      params["log_scale"] = jnp.zeros((self.data_dim,), jnp.float32)
    return params

  # -- encoder and decoder ---------------------------------------------------

  def _encoder_output(self, params: dict, x: jax.Array) -> jax.Array:
    if self.architecture == "conv":
      return conv_lib.conv_encoder(params["encoder"], x.reshape(self.input_shape),
                                   self.activation)
    theta = params["encoder"]
    return networks.network(theta, x, networks.mlp_activations(self.activation, len(theta)))

  def encode(self, params: dict, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """q_φ(z|x) = N(μ(x), diag σ²(x)) of one example.

    The encoder's last (affine) layer outputs 2d numbers: the first d are μ,
    the last d are log σ² (log-variance parameterisation).

    Args:
      params: the model's parameters.
      x: one flattened example, [D].

    Returns:
      (μ, log σ²), each [d].

    Raises:
      ValueError: for a deterministic model (use `code`).
    """
    if not self.stochastic:
      raise ValueError(
          "a deterministic autoencoder (stochastic=False) has no q(z|x);"
          " use model.code(params, x).")
    out = self._encoder_output(params, x)
    return out[:self.latent_dim], out[self.latent_dim:]

  def code(self, params: dict, x: jax.Array) -> jax.Array:
    """The code of one example: μ(x) for a VAE, f(x) for the deterministic AE.

    Args:
      params: the model's parameters.
      x: one flattened example, [D].

    Returns:
      The code, [d].
    """
    return self._encoder_output(params, x)[:self.latent_dim]

  def decode(self, params: dict, z: jax.Array) -> jax.Array:
    """The decoder's output g_θ(z) for one latent.

    Args:
      params: the model's parameters.
      z: one latent, [d].

    Returns:
      [D]: logits ℓ for "bernoulli" and "continuous_bernoulli", the mean m for
      the Gaussian likelihoods.
    """
    if self.architecture == "conv":
      return conv_lib.conv_decoder(params["decoder"], z, self.input_shape,
                                   self.activation).reshape(-1)
    theta = params["decoder"]
    return networks.network(theta, z, networks.mlp_activations(self.activation, len(theta)))

  def log_likelihood(self, params: dict, x: jax.Array, decoded: jax.Array) -> jax.Array:
    """log p_θ(x|z), summed over the D pixels, from decoded = g_θ(z).

    * bernoulli: Σ_j [x_j ℓ_j − softplus(ℓ_j)];
    * gaussian: −½ Σ_j [log 2π + 2 log σ + (x_j − m_j)²/σ²];
    * gaussian_learned: the same with σ_j = exp(max(log_scale_j, MIN_LOG_SCALE));
    * continuous_bernoulli: Σ_j [log C(λ_j) + x_j log λ_j + (1 − x_j) log(1 − λ_j)].

    The Gaussian and continuous Bernoulli values are log *densities* on ℝ^D
    or [0, 1]^D and are not comparable with the Bernoulli's log-mass.

    Args:
      params: the model's parameters (for the learned log-scale).
      x: one flattened example, [D].
      decoded: `decode(params, z)`, [D].

    Returns:
      The scalar log p_θ(x|z).
    """
    if self.likelihood == "bernoulli":
      return distributions.bernoulli_log_prob(x, decoded)
    if self.likelihood == "continuous_bernoulli":
      return distributions.continuous_bernoulli_log_prob(x, decoded)
    if self.likelihood == "gaussian":
      log_var = jnp.full_like(decoded, 2.0 * math.log(self.gaussian_scale))
    else:
      log_var = 2.0 * jnp.maximum(params["log_scale"], MIN_LOG_SCALE)
    return distributions.gaussian_log_prob(x, decoded, log_var)

  def mean(self, params: dict, decoded: jax.Array) -> jax.Array:
    """E[x|z] for display as an image, from decoded = g_θ(z).

    sigmoid(ℓ) (Bernoulli), the continuous Bernoulli mean
    1/(1 − e^{−ℓ}) − 1/ℓ, or the Gaussian mean m clipped to [0, 1].

    Args:
      params: the model's parameters (unused; kept for a uniform signature).
      decoded: `decode(params, z)`, [D].

    Returns:
      [D], in [0, 1].
    """
    del params
    if self.likelihood == "bernoulli":
      return jax.nn.sigmoid(decoded)
    if self.likelihood == "continuous_bernoulli":
      return distributions.continuous_bernoulli_mean(decoded)
    return jnp.clip(decoded, 0.0, 1.0)

  # -- sampling --------------------------------------------------------------

  @staticmethod
  def reparameterize(key: jax.Array, mu: jax.Array, log_var: jax.Array) -> jax.Array:
    """z = μ + σ ⊙ ε with σ = exp(½ log σ²), ε ~ N(0, I) drawn from `key`.

    For a fixed key, z is a differentiable function of (μ, log σ²): the
    reparameterisation trick.

    Args:
      key: a `jax.random` key.
      mu: μ, [d].
      log_var: log σ², [d].

    Returns:
      z ~ N(μ, diag σ²), [d].
    """
    epsilon = jax.random.normal(key, mu.shape, mu.dtype)
    return mu + jnp.exp(0.5 * log_var) * epsilon

  def sample(self, params: dict, key: jax.Array, num: int,
             temperature: float = 1.0) -> jax.Array:
    """Means E[x|z] of `num` latents z ~ N(0, T² I) (T = 1: the prior).

    Args:
      params: the model's parameters.
      key: a `jax.random` key.
      num: number of samples (a Python int).
      temperature: T, the prior's scale; T < 1 trades diversity for quality.

    Returns:
      [num, D], in [0, 1].
    """
    z = temperature * jax.random.normal(key, (num, self.latent_dim))
    return jax.vmap(lambda z_i: self.mean(params, self.decode(params, z_i)))(z)

  def reconstruct(self, params: dict, x: jax.Array) -> jax.Array:
    """E[x | z = μ(x)] (or z = f(x) for the deterministic AE) of one example.

    Args:
      params: the model's parameters.
      x: one flattened example, [D].

    Returns:
      The reconstruction, [D], in [0, 1].
    """
    return self.mean(params, self.decode(params, self.code(params, x)))
