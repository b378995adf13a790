"""A PyTorch reference of vae_jax's MLP VAEs and their training step, for the benchmarks.

The same models, initialisation, losses and optimizer as `vae_jax` (and
nothing more), written the way a PyTorch user would:

* L stochastic layers (`vae_jax.models.vae.VAE`): the posterior
  q(z₁|x) q(z₂|z₁) ⋯ q(z_L|z_{L−1}), the generative model
  p(z_L) p(z_{L−1}|z_L) ⋯ p(x|z₁) with p(z_L) = N(0, I) and Bernoulli pixels.
  Every conditional Gaussian N(μ(h), diag σ²(h)) is an MLP with 2d outputs
  (μ, log σ²) (`vae_jax.models.gaussian_layers`); q(z_{l+1}|z_l) is computed
  from the *sampled* z_l. Widths: q(z₁|x) (D, h_1, …, h_m, 2d₁), p(x|z₁)
  (d₁, h_m, …, h_1, D), q(z_{l+1}|z_l) (d_l, u_1, …, u_n, 2d_{l+1}) and
  p(z_l|z_{l+1}) (d_{l+1}, u_n, …, u_1, 2d_l). The activation φ is on every
  hidden layer, the identity on each last layer;
* W_i ~ N(0, 2/d_{i−1}) for ReLU-like layers (He), W_i ~ U(±√(6/(d_{i−1}+d_i)))
  otherwise (Glorot), b_i = 0 (`vae_jax.nn.networks.init`);
* k reparameterised samples z_l = μ_l + σ_l ⊙ ε_l per example, the encoder of
  x run once; log-weights log w = log p(x|z₁) + log p(z) − log q(z|x);
* the loss −(1/B) Σ_b objective(x_b) (`vae_jax.inference.objectives`):
  "elbo", the mean over the k samples of log p(x|z₁) minus the closed-form
  KL(q(z|x) ‖ N(0, I)) for one layer, else of log w (the Monte Carlo KL);
  "iwae", logsumexp_k(log w) − log k (the plain reparameterisation gradient);
* optionally x ~ Bernoulli(x) resampled every step (dynamic binarisation);
* Adam (`torch.optim.Adam`, the same lr, betas and eps).

Install with exactly `pip install torch==2.13.0` (a CPU build); torch is not a
dependency of vae_jax.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn
import torch.nn.functional as F

OBJECTIVES = ("elbo", "iwae")
_LOG_2PI = math.log(2 * math.pi)
_HE_ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "silu")
_ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh,
                "sigmoid": nn.Sigmoid, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU,
                "softplus": nn.Softplus}


def mlp(widths: Sequence[int], activation: str) -> nn.Sequential:
  """Linear layers of the given widths with φ between them, initialised as `vae_jax.nn.networks.init`."""
  layers = []
  for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
    linear = nn.Linear(fan_in, fan_out)
    last = i == len(widths) - 2
    with torch.no_grad():
      if not last and activation in _HE_ACTIVATIONS:
        linear.weight.normal_(0.0, math.sqrt(2.0 / fan_in))
      else:
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        linear.weight.uniform_(-limit, limit)
      linear.bias.zero_()
    layers.append(linear)
    if not last:
      layers.append(_ACTIVATIONS[activation]())
  return nn.Sequential(*layers)


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
  """log N(z; μ, diag σ²), summed over the last axis."""
  return -0.5 * torch.sum(_LOG_2PI + log_var + (z - mu).square() * torch.exp(-log_var), dim=-1)


class GaussianLayer(nn.Module):
  """N(μ(h), diag σ²(h)) with (μ, log σ²) = f(h), f an MLP (input, *hidden, 2d)."""

  def __init__(self, input_dim: int, hidden_widths: Sequence[int], latent_dim: int,
               activation: str):
    super().__init__()
    self.net = mlp((input_dim, *hidden_widths, 2 * latent_dim), activation)

  def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return self.net(h).chunk(2, dim=-1)


class Vae(nn.Module):
  """The VAE with L = len(latent_dims) stochastic layers and its loss (see the module docstring)."""

  def __init__(self, data_dim: int, hidden_widths: Sequence[int], latent_dims: Sequence[int],
               activation: str, upper_hidden_widths: Sequence[int] = (), objective: str = "elbo",
               num_samples: int = 1):
    super().__init__()
    if objective not in OBJECTIVES:
      raise ValueError(f"objective={objective!r} is unknown; choose one of {', '.join(OBJECTIVES)}.")
    self.latent_dims, self.objective, self.num_samples = tuple(latent_dims), objective, num_samples
    upper = tuple(upper_hidden_widths)
    self.encoders = nn.ModuleList(    # q(z₁|x), q(z₂|z₁), …
        [GaussianLayer(data_dim, hidden_widths, latent_dims[0], activation)]
        + [GaussianLayer(d_in, upper, d_out, activation)
           for d_in, d_out in zip(latent_dims[:-1], latent_dims[1:])])
    self.conditional_priors = nn.ModuleList(   # p(z₁|z₂), p(z₂|z₃), …
        [GaussianLayer(d_in, upper[::-1], d_out, activation)
         for d_in, d_out in zip(latent_dims[1:], latent_dims[:-1])])
    self.decoder = mlp((latent_dims[0], *reversed(hidden_widths), data_dim), activation)

  def forward(self, x: torch.Tensor, noise: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """The loss −mean_b objective(x_b) of a batch x [B, D].

    Args:
      x: the batch, [B, D].
      noise: ε_l [k, B, d_l] of each layer (default: drawn with torch.randn).
    """
    k = self.num_samples
    if noise is None:
      noise = [torch.randn(k, x.shape[0], d, dtype=x.dtype, device=x.device) for d in self.latent_dims]
    mu, log_var = self.encoders[0](x)                  # once per x: [B, d₁]
    zs = [mu + torch.exp(0.5 * log_var) * noise[0]]    # [k, B, d₁]
    logits = self.decoder(zs[0])
    log_px = torch.sum(x * logits - F.softplus(logits), dim=-1)              # [k, B]
    if self.objective == "elbo" and len(self.latent_dims) == 1:   # closed-form KL(q ‖ N(0, I))
      kl = 0.5 * torch.sum(mu.square() + log_var.exp() - log_var - 1.0, dim=-1)
      return -torch.mean(log_px.mean(dim=0) - kl)
    log_q = gaussian_log_prob(zs[0], mu, log_var)
    for encoder, epsilon in zip(self.encoders[1:], noise[1:]):   # q(z_{l+1}|z_l), z_l sampled
      mu, log_var = encoder(zs[-1])
      zs.append(mu + torch.exp(0.5 * log_var) * epsilon)
      log_q = log_q + gaussian_log_prob(zs[-1], mu, log_var)
    log_pz = -0.5 * torch.sum(_LOG_2PI + zs[-1].square(), dim=-1)
    for prior, z_out, z_in in zip(self.conditional_priors, zs[:-1], zs[1:]):
      log_pz = log_pz + gaussian_log_prob(z_out, *prior(z_in))
    log_w = log_px + log_pz - log_q
    if self.objective == "iwae":
      return -torch.mean(torch.logsumexp(log_w, dim=0) - math.log(k))
    return -torch.mean(log_w)                          # the ELBO with the Monte Carlo KL


def make_step(hidden_widths: Sequence[int], latent_dims: Sequence[int], activation: str, *,
              upper_hidden_widths: Sequence[int] = (), objective: str = "elbo",
              num_samples: int = 1, data_dim: int = 784, learning_rate: float = 1e-3,
              betas=(0.9, 0.999), eps: float = 1e-8, dynamic_binarization: bool = False,
              compile: bool = False, seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
  """`step(batch [B, D]) -> loss`: one Adam update of a fresh model.

  Args:
    hidden_widths, latent_dims, activation, upper_hidden_widths: the model
      (as `vae_jax.models.vae.VAE`'s hidden_widths, (latent_dim,
      *upper_latent_dims), activation and upper_hidden_widths).
    objective, num_samples: "elbo" or "iwae", and k.
    data_dim: D.
    learning_rate, betas, eps: Adam's hyperparameters.
    dynamic_binarization: resample x ~ Bernoulli(x) every step.
    compile: wrap the loss (forward and backward) in `torch.compile`.
    seed: `torch.manual_seed` for the initialisation and the noise.
  """
  torch.manual_seed(seed)
  model = Vae(data_dim, hidden_widths, latent_dims, activation, upper_hidden_widths,
              objective, num_samples)
  optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, betas=betas, eps=eps)
  loss_fn = torch.compile(model) if compile else model

  def step(batch: torch.Tensor) -> torch.Tensor:
    if dynamic_binarization:
      batch = torch.bernoulli(batch)
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(batch)
    loss.backward()
    optimizer.step()
    return loss.detach()

  return step
