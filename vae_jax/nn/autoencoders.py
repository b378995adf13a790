"""Encoders, decoders and the autoencoder (Ch. 2, Lemmas 2.1.1 and 2.1.2).

An *encoder* is a φ-deep network whose widths shrink,
n_i = d_1 ≥ d_2 ≥ … ≥ d_L = n_o (Lemma 2.1.1); a *decoder* one whose widths
grow, n_i = d_1 ≤ … ≤ d_L = n_o (Lemma 2.1.2). The autoencoder is
decoder ∘ encoder: x ↦ g(f(x)) through the bottleneck ℝ^{n_o of f}, and its
reconstruction error is what Ch. 2 trains.

Parameters are a dict {"encoder": θ_f, "decoder": θ_g} of two network θs.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from vae_jax.nn import networks


def _check_monotone(widths: Sequence[int], lemma: str, shrinking: bool) -> tuple[int, ...]:
  kind, relation = ("encoder", "≥") if shrinking else ("decoder", "≤")
  try:
    widths = networks.check_widths(widths)
  except ValueError as e:
    raise ValueError(f"{lemma}: {kind} {e}") from None
  for i in range(1, len(widths)):
    before, after = widths[i - 1], widths[i]
    if (after > before) if shrinking else (after < before):
      raise ValueError(
          f"{lemma}: {kind} widths must satisfy d_1 {relation} … {relation} d_L,"
          f" but d_{i + 1}={after} follows d_{i}={before} at position {i} of"
          f" {widths}; reorder or change the widths.")
  return widths


def check_encoder_widths(widths: Sequence[int]) -> tuple[int, ...]:
  """Checks n_i = d_1 ≥ … ≥ d_L = n_o (Lemma 2.1.1); returns the widths.

  Raises:
    ValueError: naming the lemma, the offending position and the widths.
  """
  return _check_monotone(widths, "Lemma 2.1.1", shrinking=True)


def check_decoder_widths(widths: Sequence[int]) -> tuple[int, ...]:
  """Checks n_i = d_1 ≤ … ≤ d_L = n_o (Lemma 2.1.2); returns the widths.

  Raises:
    ValueError: naming the lemma, the offending position and the widths.
  """
  return _check_monotone(widths, "Lemma 2.1.2", shrinking=False)


def split_widths(widths: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """Splits autoencoder widths such as (5, 4, 3, 2, 3, 4, 5) at the bottleneck.

  The bottleneck is the (first) smallest width; it ends the encoder and starts
  the decoder: ((5, 4, 3, 2), (2, 3, 4, 5)).
  """
  widths = tuple(widths)
  if len(widths) < 3:
    raise ValueError(
        f"autoencoder widths {widths} need an input, a bottleneck and an output.")
  bottleneck = widths.index(min(widths))
  if bottleneck in (0, len(widths) - 1):
    raise ValueError(
        f"autoencoder widths {widths} have their smallest width at the end; the"
        " bottleneck must lie strictly inside.")
  return widths[:bottleneck + 1], widths[bottleneck:]


def init_encoder(key, widths, activations="relu") -> networks.Params:
  """θ of an encoder (Lemma 2.1.1 widths checked)."""
  return networks.init(key, check_encoder_widths(widths), activations)


def init_decoder(key, widths, activations="relu") -> networks.Params:
  """θ of a decoder (Lemma 2.1.2 widths checked)."""
  return networks.init(key, check_decoder_widths(widths), activations)


def init_autoencoder(key: jax.Array, widths: Sequence[int],
                     activation="relu", last_activation="identity") -> dict:
  """θ of decoder ∘ encoder for widths such as (5, 4, 3, 2, 3, 4, 5).

  Each half uses φ = `activation` on its hidden layers and `last_activation`
  on its last layer (see `networks.mlp_activations`).
  """
  encoder_widths, decoder_widths = split_widths(widths)
  encoder_key, decoder_key = jax.random.split(key)
  return {
      "encoder": init_encoder(
          encoder_key, encoder_widths,
          networks.mlp_activations(activation, len(encoder_widths) - 1, last_activation)),
      "decoder": init_decoder(
          decoder_key, decoder_widths,
          networks.mlp_activations(activation, len(decoder_widths) - 1, last_activation)),
  }


def encode(params: dict, x: jax.Array, activation="relu",
           last_activation="identity") -> jax.Array:
  """The code f(x) ∈ ℝ^{bottleneck} of one example x."""
  theta = params["encoder"]
  return networks.network(
      theta, x, networks.mlp_activations(activation, len(theta), last_activation))


def decode(params: dict, code: jax.Array, activation="relu",
           last_activation="identity") -> jax.Array:
  """The decoder's output g(c) for one code c."""
  theta = params["decoder"]
  return networks.network(
      theta, code, networks.mlp_activations(activation, len(theta), last_activation))


def autoencoder(params: dict, x: jax.Array, activation="relu",
                last_activation="identity") -> jax.Array:
  """The reconstruction (g ∘ f)(x) of one example x (Ch. 2)."""
  return decode(params, encode(params, x, activation, last_activation),
                activation, last_activation)


def reconstruction_error(params: dict, x: jax.Array, activation="relu",
                         last_activation="identity") -> jax.Array:
  """Squared error ‖x − g(f(x))‖² of one example, the loss of Ch. 2."""
  return jnp.sum(jnp.square(x - autoencoder(params, x, activation, last_activation)))
