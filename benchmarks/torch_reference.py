"""A PyTorch reference of vae_jax's MLP VAE training step, for the benchmarks.

The same model, initialisation, loss and optimizer as `vae_jax` (and nothing
more), written the way a PyTorch user would:

* encoder widths (D, h_1, …, h_m, 2d), decoder (d, h_m, …, h_1, D), the
  activation φ on every hidden layer and the identity on each last layer
  (`vae_jax.nn.networks.mlp_activations`);
* W_i ~ N(0, 2/d_{i−1}) for ReLU-like layers (He), W_i ~ U(±√(6/(d_{i−1}+d_i)))
  otherwise (Glorot), b_i = 0 (`vae_jax.nn.networks.init`);
* the loss −(1/B) Σ_b [Σ_j (x_j ℓ_j − softplus(ℓ_j)) − ½ Σ_k (μ_k² + σ_k² −
  log σ_k² − 1)] with z = μ + σ ⊙ ε, ε ~ N(0, I), ℓ = g(z): the one-sample
  Bernoulli ELBO with closed-form KL (`vae_jax.inference.objectives.elbo`);
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

_HE_ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "silu")
_ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
                "elu": F.elu, "gelu": F.gelu, "silu": F.silu, "softplus": F.softplus}


def _mlp(widths: Sequence[int], activation: str) -> nn.ModuleList:
  """Linear layers of the given widths, initialised as `vae_jax.nn.networks.init`."""
  layers = nn.ModuleList()
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
  return layers


class MlpVae(nn.Module):
  """The MLP VAE: q(z|x) = N(μ, diag σ²) from the encoder, Bernoulli logits from the decoder."""

  def __init__(self, data_dim: int, hidden_widths: Sequence[int], latent_dim: int,
               activation: str):
    super().__init__()
    self.latent_dim = latent_dim
    self.activation = _ACTIVATIONS[activation]
    self.encoder = _mlp((data_dim, *hidden_widths, 2 * latent_dim), activation)
    self.decoder = _mlp((latent_dim, *reversed(hidden_widths), data_dim), activation)

  def _network(self, layers: nn.ModuleList, h: torch.Tensor) -> torch.Tensor:
    for i, linear in enumerate(layers):
      h = linear(h)
      if i < len(layers) - 1:
        h = self.activation(h)
    return h

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """The loss −mean_b ELBO(x_b) of a batch x [B, D] (one sample, analytic KL)."""
    out = self._network(self.encoder, x)
    mu, log_var = out[:, :self.latent_dim], out[:, self.latent_dim:]
    z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
    logits = self._network(self.decoder, z)
    recon = torch.sum(x * logits - F.softplus(logits), dim=1)
    kl = 0.5 * torch.sum(mu.square() + log_var.exp() - log_var - 1.0, dim=1)
    return -torch.mean(recon - kl)


def make_step(hidden_widths: Sequence[int], latent_dim: int, activation: str, *,
              data_dim: int = 784, learning_rate: float = 1e-3, betas=(0.9, 0.999),
              eps: float = 1e-8, dynamic_binarization: bool = False,
              compile: bool = False, seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
  """`step(batch [B, D]) -> loss`: one Adam update of a fresh model.

  Args:
    hidden_widths, latent_dim, activation: the model (as `vae_jax.models.vae.VAE`).
    data_dim: D.
    learning_rate, betas, eps: Adam's hyperparameters.
    dynamic_binarization: resample x ~ Bernoulli(x) every step.
    compile: wrap the loss (forward and backward) in `torch.compile`.
    seed: `torch.manual_seed` for the initialisation and the noise.
  """
  torch.manual_seed(seed)
  model = MlpVae(data_dim, hidden_widths, latent_dim, activation)
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
