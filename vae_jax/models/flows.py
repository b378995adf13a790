"""Normalising flows on the posterior: z_T = f_T ∘ … ∘ f_1(z_0), z_0 ~ q_0(z|x).

With z_0 drawn from the Gaussian posterior, the flow's density follows from
the change of variables

    log q(z_T|x) = log q_0(z_0|x) − Σ_t log |det ∂f_t/∂z_{t−1}|,

so a flow needs each step's exact log-determinant (`forward` returns it).
The flows' parameters are global (not produced by the encoder); the
dependence on x enters through z_0.

* `PlanarFlow` (Rezende & Mohamed 2015): f(z) = z + û h(wᵀz + b), h = tanh,
  log|det| = log|1 + ûᵀ h'(wᵀz + b) w|, with û = u + (m(wᵀu) − wᵀu) w/‖w‖²,
  m(a) = −1 + softplus(a), which makes wᵀû ≥ −1 and f invertible.
* `IAF`, inverse autoregressive flow (Kingma et al. 2016): a MADE network
  (a φ-deep network whose weights are masked so that output j depends only on
  z_{<j}) gives (m, s); with σ = sigmoid(s + `FORGET_BIAS`),
  f(z) = σ ⊙ z + (1 − σ) ⊙ m (their numerically stable update). The Jacobian
  is triangular, so log|det| = Σ_j log σ_j exactly. The order of the
  coordinates is reversed between steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.nn import networks

KINDS = ("none", "planar", "iaf")
# Added to s before the sigmoid, so that σ ≈ 0.88 at initialisation and each
# IAF step starts close to the identity (Kingma et al. 2016, Sec. 4).
FORGET_BIAS = 2.0


@dataclasses.dataclass(frozen=True)
class PlanarFlow:
  """`length` planar steps on ℝ^d."""
  latent_dim: int
  length: int

  def init(self, key: jax.Array) -> dict:
    u_key, w_key = jax.random.split(key)
    shape = (self.length, self.latent_dim)
    return {"u": 0.01 * jax.random.normal(u_key, shape), "w": 0.01 * jax.random.normal(w_key, shape),
            "b": jnp.zeros((self.length,), jnp.float32)}

  def forward(self, params: dict, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(f(z), log|det ∂f/∂z|) of one z [d]."""
    def step(z, theta):
      u, w, b = theta
      w_dot_u = jnp.dot(w, u)
      u_hat = u + (jax.nn.softplus(w_dot_u) - 1.0 - w_dot_u) * w / (jnp.dot(w, w) + 1e-12)
      activation = jnp.tanh(jnp.dot(w, z) + b)
      psi = (1.0 - jnp.square(activation)) * w
      return z + u_hat * activation, jnp.log(jnp.abs(1.0 + jnp.dot(u_hat, psi)))
    z, log_dets = jax.lax.scan(step, z, (params["u"], params["w"], params["b"]))
    return z, jnp.sum(log_dets)


def made_masks(latent_dim: int, hidden_widths: tuple) -> list[np.ndarray]:
  """Masks [out, in] of a MADE (d, h_1, …, h_m, 2d): output j (of m and of s) sees only z_{<j}.

  Degrees: input j has degree j + 1; hidden units cycle through 1, …, d − 1
  (0 when d = 1: the unit is a constant); a hidden unit sees inputs of degree
  ≤ its own, an output of degree j + 1 sees hidden units of degree ≤ j.
  """
  d = latent_dim
  degrees = [np.arange(1, d + 1)]
  for width in hidden_widths:
    degrees.append(np.arange(width) % (d - 1) + 1 if d > 1 else np.zeros(width, int))
  masks = [(out[:, None] >= inp[None, :]).astype(np.float32) for inp, out in zip(degrees[:-1], degrees[1:])]
  out_degrees = np.concatenate([degrees[0], degrees[0]])
  masks.append((out_degrees[:, None] > degrees[-1][None, :]).astype(np.float32))
  return masks


@dataclasses.dataclass(frozen=True)
class IAF:
  """`length` inverse autoregressive steps on ℝ^d, each a MADE of the given hidden widths."""
  latent_dim: int
  length: int
  hidden_widths: tuple = (320, 320)
  activation: Any = "relu"

  @property
  def widths(self) -> tuple:
    return (self.latent_dim, *self.hidden_widths, 2 * self.latent_dim)

  def init(self, key: jax.Array) -> list:
    acts = networks.mlp_activations(self.activation, len(self.widths) - 1)
    return [networks.init(k, self.widths, acts) for k in jax.random.split(key, self.length)]

  def made(self, theta: list, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(m, s) of one z: the masked φ-deep network."""
    masks = made_masks(self.latent_dim, self.hidden_widths)
    masked = [(w * mask, b) for (w, b), mask in zip(theta, masks)]
    out = networks.network(masked, z, networks.mlp_activations(self.activation, len(masked)))
    return out[:self.latent_dim], out[self.latent_dim:]

  def forward(self, params: list, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(f(z), log|det ∂f/∂z|) of one z [d]; the order is reversed before every step but the first."""
    log_det = jnp.zeros((), z.dtype)
    for t, theta in enumerate(params):
      if t:
        z = z[::-1]
      m, s = self.made(theta, z)
      sigma = jax.nn.sigmoid(s + FORGET_BIAS)
      z = sigma * z + (1.0 - sigma) * m
      log_det = log_det + jnp.sum(jax.nn.log_sigmoid(s + FORGET_BIAS))
    return z, log_det


def make(kind: str, latent_dim: int, length: int, hidden_widths: tuple, activation: Any):
  """The flow named `kind` (one of `KINDS`), or None for "none"."""
  if kind == "none":
    return None
  if length < 1:
    raise ValueError(f"model.flow_length={length}: a {kind} flow needs ≥ 1 steps; use e.g. 4,"
                     " or model.flow='none'.")
  if kind == "planar":
    return PlanarFlow(latent_dim, length)
  if kind == "iaf":
    return IAF(latent_dim, length, tuple(hidden_widths), activation)
  raise ValueError(f"model.flow={kind!r} is unknown; choose one of {', '.join(KINDS)}.")
