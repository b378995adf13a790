"""The model a config describes."""

from __future__ import annotations

import dataclasses

import ml_collections

from vae_jax.datasets import data as data_lib
from vae_jax.models import vae as vae_lib


def build_model(config: ml_collections.ConfigDict) -> vae_lib.VAE:
  """The model spec of `config` (a deterministic autoencoder for objective "ae")."""
  info = data_lib.dataset_info(config.data.name)
  model = vae_lib.VAE.from_config(config.model, info.image_shape)
  return dataclasses.replace(model, stochastic=config.objective.name != "ae")
