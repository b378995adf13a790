"""The variational autoencoder as a chain of parts.

The generative model with L stochastic layers is

    p(x, z) = p(x|z₁) p(z₁|z₂) ⋯ p(z_{L−1}|z_L) p(z_L),

and the approximate posterior the chain

    q(z|x) = q(z₁|x) q(z₂|z₁) ⋯ q(z_L|z_{L−1}),

(Burda et al. 2016, Sec. 5, for L = 2). Each factor is a part, a pure
function of its own parameter pytree, written for one example (batch with
`jax.vmap`):

* q(z₁|x): a `GaussianLayer` whose network is an MLP or conv φ-network,
  optionally followed by a normalising flow (`vae_jax.models.flows`);
* q(z_{l+1}|z_l) and p(z_l|z_{l+1}): `GaussianLayer`s;
* p(z_L): a prior from `vae_jax.models.priors` (standard normal, mixture of
  Gaussians, VampPrior);
* p(x|z₁): a decoder network g_θ (MLP or conv) and a pixel `Likelihood`.

Widths. With D = prod(input_shape) (or F, the conv features) and hidden
widths (h_1, …, h_m), q(z₁|x) has (D, h_1, …, h_m, 2d₁) and p(x|z₁) the
network (d₁, h_m, …, h_1, D); an upper layer with hidden widths
(u_1, …, u_n) has (d_l, u_1, …, u_n, 2d_{l+1}) in q and
(d_{l+1}, u_n, …, u_1, 2d_l) in p. Each posterior head (…, d) is checked with
Lemma 2.1.1 and each generative network with Lemma 2.1.2.

The objectives and the log-likelihood estimate (`vae_jax.inference`) see
only three methods: `prior_params` (once per batch), `sample_latents` (the
reparameterised path z(ε)) and `log_p`/`log_q` of the whole chain; they never
branch on the family. `stochastic=False` gives the deterministic autoencoder
of Ch. 2 (the encoder outputs the code f(x) only).

The model is a frozen dataclass: hashable, so it can be a static argument or a
closed-over constant of `jax.jit`. It holds no parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vae_jax.models import flows as flows_lib
from vae_jax.models import gaussian_layers
from vae_jax.models import likelihoods
from vae_jax.models import priors as priors_lib
from vae_jax.nn import activations as activations_lib
from vae_jax.nn import autoencoders
from vae_jax.nn import conv as conv_lib
from vae_jax.nn import networks

ARCHITECTURES = ("mlp", "conv")
LIKELIHOODS = likelihoods.KINDS
MIN_LOG_SCALE = likelihoods.MIN_LOG_SCALE

_FIELDS = ("architecture", "hidden_widths", "latent_dim", "activation", "likelihood",
           "gaussian_scale", "conv_channels", "stochastic", "upper_latent_dims",
           "upper_hidden_widths", "prior", "prior_components", "flow", "flow_length",
           "flow_hidden_widths")


class Latents(NamedTuple):
  """One draw of the posterior chain: z₀ (before the flow), (z₁, …, z_L), log|det| of the flow."""
  z0: jax.Array
  zs: tuple
  log_det: jax.Array


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _widths_error(what: str, widths: tuple, error: Exception) -> ValueError:
  return ValueError(f"{what} give widths {widths}: {error}")


@dataclasses.dataclass(frozen=True)
class VAE:
  """Specification of a VAE (or, with stochastic=False, a deterministic AE).

  Attributes:
    input_shape: shape of one image; x is given flattened, [prod(input_shape)].
    architecture: "mlp" (dense φ-layers) or "conv" (`vae_jax.nn.conv`) for
      q(z₁|x) and p(x|z₁).
    hidden_widths: hidden widths h_1 ≥ … ≥ h_m of q(z₁|x); p(x|z₁) uses them
      reversed.
    latent_dim: d₁, the dimension of z₁.
    activation: φ of every hidden layer (a registered name or a callable).
    likelihood: the pixel distribution, one of `LIKELIHOODS`.
    gaussian_scale: σ of the fixed-variance Gaussian likelihood.
    conv_channels: channels of the conv layers (architecture "conv").
    stochastic: False for the deterministic autoencoder of Ch. 2.
    upper_latent_dims: (d₂, …, d_L) of the stochastic layers above z₁; () for one layer.
    upper_hidden_widths: hidden widths of every network between two stochastic layers.
    prior: p(z_L), one of `priors.KINDS`.
    prior_components: K of the mixture / VampPrior.
    flow: the flow on q(z₁|x), one of `flows.KINDS`.
    flow_length: its number of steps.
    flow_hidden_widths: the hidden widths of each IAF step's MADE.
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
  upper_latent_dims: tuple = ()
  upper_hidden_widths: tuple = ()
  prior: str = "standard_normal"
  prior_components: int = 500
  flow: str = "none"
  flow_length: int = 0
  flow_hidden_widths: tuple = (320, 320)

  def __post_init__(self):
    for name in ("input_shape", "hidden_widths", "conv_channels", "upper_latent_dims",
                 "upper_hidden_widths", "flow_hidden_widths"):
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
    likelihoods.Likelihood(self.likelihood, 1, 1.0)   # checks the kind
    try:
      activations_lib.get(self.activation)
    except ValueError as e:
      raise ValueError(f"model.activation={self.activation!r} is invalid: {e}") from None
    if not isinstance(self.stochastic, bool):
      raise ValueError(f"model.stochastic must be True or False, got {self.stochastic!r}.")
    if not (isinstance(self.gaussian_scale, (int, float)) and math.isfinite(self.gaussian_scale)
            and self.gaussian_scale > 0):
      raise ValueError(f"model.gaussian_scale must be a finite number > 0, got {self.gaussian_scale!r}.")
    if not self.input_shape or any(not _is_int(d) or d < 1 for d in self.input_shape):
      raise ValueError(f"input_shape must hold positive integers, got {self.input_shape}.")
    if self.architecture == "conv":
      conv_lib.check_input_shape(self.input_shape, self.conv_channels)
    for name in ("hidden_widths", "upper_latent_dims", "upper_hidden_widths", "flow_hidden_widths"):
      if any(not _is_int(h) or h < 1 for h in getattr(self, name)):
        raise ValueError(f"model.{name} must hold positive integers, got {getattr(self, name)}.")
    if not self.stochastic:
      extras = [f"{name}={getattr(self, name)!r}" for name, default in
                (("upper_latent_dims", ()), ("prior", "standard_normal"), ("flow", "none"))
                if getattr(self, name) != default]
      if extras:
        raise ValueError(
            f"model.{extras[0]}: a deterministic autoencoder (objective 'ae') has no latent"
            " distribution; drop it or train a VAE (objective 'elbo' or 'iwae').")
    self._check_widths()
    priors_lib.make(self.prior, self.top_latent_dim, self.prior_components, self.data_dim)
    flows_lib.make(self.flow, self.latent_dim, self.flow_length, self.flow_hidden_widths,
                   self.activation)

  def _check_widths(self) -> None:
    head = (self.feature_dim, *self.hidden_widths, self.latent_dim)
    try:
      autoencoders.check_encoder_widths(head)
    except ValueError as e:
      raise _widths_error(f"model.hidden_widths={self.hidden_widths} with latent_dim="
                          f"{self.latent_dim}", head, e) from None
    try:
      autoencoders.check_decoder_widths(self.decoder_widths)
    except ValueError as e:
      raise _widths_error(f"model.hidden_widths={self.hidden_widths} with latent_dim="
                          f"{self.latent_dim}", self.decoder_widths, e) from None
    for layer, role in [(q, "encoder") for q in self.upper_posteriors] + [
        (p, "decoder") for p in self.conditional_priors]:
      try:
        layer.check_widths(role)
      except ValueError as e:
        raise _widths_error(
            f"model.upper_hidden_widths={self.upper_hidden_widths} with latent dims"
            f" {self.latent_dims} ({'q' if role == 'encoder' else 'p'} layer)",
            (layer.input_dim, *layer.hidden_widths, layer.latent_dim), e) from None

  @classmethod
  def from_config(cls, model_config, input_shape) -> "VAE":
    """Builds and validates a VAE from a config (an `ml_collections.ConfigDict`).

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
    for name, value in values.items():
      if isinstance(value, list):
        values[name] = tuple(value)
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
  def latent_dims(self) -> tuple:
    """(d₁, …, d_L)."""
    return (self.latent_dim, *self.upper_latent_dims)

  @property
  def top_latent_dim(self) -> int:
    """d_L, the dimension of the prior's latent."""
    return self.latent_dims[-1]

  @property
  def encoder_widths(self) -> tuple:
    """Dense widths of q(z₁|x): (D or F, *hidden, 2d₁), or (…, d₁) if deterministic."""
    return self.posterior.widths

  @property
  def decoder_widths(self) -> tuple:
    """Dense widths of p(x|z₁): (d₁, *reversed(hidden), D or F)."""
    return (self.latent_dim, *reversed(self.hidden_widths), self.feature_dim)

  # -- parts -------------------------------------------------------------------

  @functools.cached_property
  def posterior(self) -> gaussian_layers.GaussianLayer:
    """q(z₁|x) before the flow (for stochastic=False: the code network, one head)."""
    conv = self.architecture == "conv"
    return gaussian_layers.GaussianLayer(
        self.data_dim, self.hidden_widths, self.latent_dim, self.activation,
        input_shape=self.input_shape if conv else (),
        conv_channels=self.conv_channels if conv else (), heads=2 if self.stochastic else 1)

  @functools.cached_property
  def upper_posteriors(self) -> tuple:
    """q(z_{l+1}|z_l) for l = 1, …, L−1."""
    return tuple(gaussian_layers.GaussianLayer(d_in, self.upper_hidden_widths, d_out, self.activation)
                 for d_in, d_out in zip(self.latent_dims[:-1], self.latent_dims[1:]))

  @functools.cached_property
  def conditional_priors(self) -> tuple:
    """p(z_l|z_{l+1}) for l = 1, …, L−1."""
    widths = tuple(reversed(self.upper_hidden_widths))
    return tuple(gaussian_layers.GaussianLayer(d_in, widths, d_out, self.activation)
                 for d_in, d_out in zip(self.latent_dims[1:], self.latent_dims[:-1]))

  @functools.cached_property
  def pixel_likelihood(self) -> likelihoods.Likelihood:
    return likelihoods.Likelihood(self.likelihood, self.data_dim, self.gaussian_scale)

  @functools.cached_property
  def prior_part(self):
    return priors_lib.make(self.prior, self.top_latent_dim, self.prior_components, self.data_dim)

  @functools.cached_property
  def flow_part(self):
    return flows_lib.make(self.flow, self.latent_dim, self.flow_length, self.flow_hidden_widths,
                          self.activation)

  @property
  def has_analytic_kl(self) -> bool:
    """KL(q(z|x) ‖ p(z)) has a closed form: one Gaussian layer, no flow, standard normal prior."""
    return (not self.upper_latent_dims and self.flow == "none"
            and self.prior == "standard_normal")

  # -- parameters ------------------------------------------------------------

  def init(self, key: jax.Array) -> dict:
    """Initial parameters.

    Returns:
      {"encoder": θ of q(z₁|x), "decoder": θ of p(x|z₁)}, plus "log_scale"
      (learned Gaussian likelihood), "upper" (a list of {"encoder": θ of
      q(z_{l+1}|z_l), "decoder": θ of p(z_l|z_{l+1})}), "prior" (a learned
      prior) and "flow" where the model has them.
    """
    keys = jax.random.split(key, 6)
    params = {"encoder": self.posterior.init(keys[0])}
    if self.architecture == "conv":
      params["decoder"] = conv_lib.init_conv_decoder(
          keys[1], self.latent_dim, self.input_shape, self.conv_channels, self.hidden_widths,
          self.activation)
    else:
      params["decoder"] = networks.init(
          keys[1], self.decoder_widths,
          networks.mlp_activations(self.activation, len(self.decoder_widths) - 1))
    params.update(self.pixel_likelihood.init(keys[2]))
    if self.upper_latent_dims:
      layer_keys = jax.random.split(keys[3], 2 * len(self.upper_posteriors))
      params["upper"] = [{"encoder": q.init(layer_keys[2 * i]), "decoder": p.init(layer_keys[2 * i + 1])}
                         for i, (q, p) in enumerate(zip(self.upper_posteriors, self.conditional_priors))]
    if self.stochastic and self.prior != "standard_normal":
      params["prior"] = self.prior_part.init(keys[4])
    if self.flow_part is not None:
      params["flow"] = self.flow_part.init(keys[5])
    return params

  # -- encoder and decoder ---------------------------------------------------

  def encode(self, params: dict, x: jax.Array) -> gaussian_layers.Stats:
    """(μ(x), log σ²(x)) of q(z₁|x) (before any flow) for one example x [D]."""
    if not self.stochastic:
      raise ValueError(
          "a deterministic autoencoder (stochastic=False) has no q(z|x);"
          " use model.code(params, x).")
    return self.posterior.stats(params["encoder"], x)

  def code(self, params: dict, x: jax.Array) -> jax.Array:
    """The code of one example: μ₁(x) for a VAE, f(x) for the deterministic AE, [d₁]."""
    return self.posterior.stats(params["encoder"], x)[0]

  def decode(self, params: dict, z: jax.Array) -> jax.Array:
    """g_θ(z₁), the decoder's output for one latent z₁ [d₁]: logits or means, [D]."""
    if self.architecture == "conv":
      return conv_lib.conv_decoder(params["decoder"], z, self.input_shape,
                                   self.activation).reshape(-1)
    theta = params["decoder"]
    return networks.network(theta, z, networks.mlp_activations(self.activation, len(theta)))

  def log_likelihood(self, params: dict, x: jax.Array, decoded: jax.Array) -> jax.Array:
    """log p_θ(x|z₁) from decoded = `decode(params, z₁)` (see `likelihoods.Likelihood.log_prob`)."""
    return self.pixel_likelihood.log_prob(params, x, decoded)

  def mean(self, params: dict, decoded: jax.Array) -> jax.Array:
    """E[x|z₁] in [0, 1] from decoded = `decode(params, z₁)`."""
    del params
    return self.pixel_likelihood.mean(decoded)

  @staticmethod
  def reparameterize(key: jax.Array, mu: jax.Array, log_var: jax.Array) -> jax.Array:
    """z = μ + σ ⊙ ε, ε ~ N(0, I) from `key` (the reparameterisation trick)."""
    return gaussian_layers.GaussianLayer.sample((mu, log_var), key)

  # -- the chain (what the objectives see) -------------------------------------

  def _top_stats(self, params: dict, x: jax.Array) -> gaussian_layers.Stats:
    """Statistics of q(z_L|·) for input x with the lower layers at their means (VampPrior's q(z|u))."""
    stats = self.encode(params, x)
    for q, theta in zip(self.upper_posteriors, params.get("upper", ())):
      stats = q.stats(theta["encoder"], stats[0])
    return stats

  def prior_params(self, params: dict) -> dict:
    """p(z_L)'s distribution parameters, computed once per batch (the VampPrior encodes its u_k)."""
    encode = jax.vmap(lambda u: self._top_stats(params, u))
    return self.prior_part.prepare(params.get("prior", {}), encode)

  def sample_latents(self, params: dict, stats: gaussian_layers.Stats, key: jax.Array) -> Latents:
    """One reparameterised draw z ~ q(z|x) of the chain, from q(z₁|x)'s statistics.

    z₀ = μ₁ + σ₁ ⊙ ε with ε from `key` itself, z₁ = flow(z₀), and
    z_{l+1} = μ_{l+1}(z_l) + σ_{l+1}(z_l) ⊙ ε_{l+1} with ε_{l+1} from fold_in(key, l).
    """
    z0 = gaussian_layers.GaussianLayer.sample(stats, key)
    z, log_det = z0, jnp.zeros((), z0.dtype)
    if self.flow_part is not None:
      z, log_det = self.flow_part.forward(params["flow"], z0)
    zs = [z]
    for l, (q, theta) in enumerate(zip(self.upper_posteriors, params.get("upper", ())), start=1):
      zs.append(q.sample(q.stats(theta["encoder"], zs[-1]), jax.random.fold_in(key, l)))
    return Latents(z0=z0, zs=tuple(zs), log_det=log_det)

  def log_q(self, params: dict, stats: gaussian_layers.Stats, latents: Latents) -> jax.Array:
    """log q(z|x) of the chain: log q₀(z₀|x) − log|det| + Σ_l log q(z_{l+1}|z_l)."""
    value = gaussian_layers.GaussianLayer.log_prob(stats, latents.z0) - latents.log_det
    for q, theta, z_in, z_out in zip(self.upper_posteriors, params.get("upper", ()),
                                     latents.zs[:-1], latents.zs[1:]):
      value = value + q.log_prob(q.stats(theta["encoder"], z_in), z_out)
    return value

  def log_p(self, params: dict, prior_params: dict, x: jax.Array,
            latents: Latents) -> tuple[jax.Array, jax.Array]:
    """(log p(x|z₁), log p(z)) with log p(z) = log p(z_L) + Σ_l log p(z_l|z_{l+1})."""
    log_px_given_z = self.log_likelihood(params, x, self.decode(params, latents.zs[0]))
    log_pz = self.prior_part.log_prob(prior_params, latents.zs[-1])
    for p, theta, z_out, z_in in zip(self.conditional_priors, params.get("upper", ()),
                                     latents.zs[:-1], latents.zs[1:]):
      log_pz = log_pz + p.log_prob(p.stats(theta["decoder"], z_in), z_out)
    return log_px_given_z, log_pz

  # -- generation --------------------------------------------------------------

  def sample(self, params: dict, key: jax.Array, num: int,
             temperature: float = 1.0) -> jax.Array:
    """Means E[x|z₁] of `num` ancestral samples z_L ~ p, z_l ~ p(z_l|z_{l+1}).

    Every Gaussian's noise (and the prior's) is scaled by the temperature T;
    T = 1 samples the model, T < 1 trades diversity for quality.

    Returns:
      [num, D], in [0, 1].
    """
    prior_params = self.prior_params(params)

    def one(key):
      z = self.prior_part.sample(prior_params, jax.random.fold_in(key, 0), temperature)
      for l in reversed(range(len(self.conditional_priors))):
        p, theta = self.conditional_priors[l], params["upper"][l]["decoder"]
        z = p.sample(p.stats(theta, z), jax.random.fold_in(key, l + 1), temperature)
      return self.mean(params, self.decode(params, z))
    return jax.vmap(one)(jax.random.split(key, num))

  def reconstruct(self, params: dict, x: jax.Array) -> jax.Array:
    """E[x | z₁ = μ₁(x)] (or z = f(x) for the deterministic AE) of one example, [D]."""
    return self.mean(params, self.decode(params, self.code(params, x)))
