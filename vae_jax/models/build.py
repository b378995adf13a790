"""The model a config describes."""

from __future__ import annotations

import ml_collections

from vae_jax.datasets import data as data_lib
from vae_jax.inference import objectives
from vae_jax.models import vae as vae_lib


def build_model(config: ml_collections.ConfigDict) -> vae_lib.VAE:
  """The model spec of `config` (a deterministic autoencoder for objective "ae").

  Raises:
    ValueError: one line naming the field and the fix, for a model that
      cannot be built or an estimator that does not fit it.
  """
  info = data_lib.dataset_info(config.data.name)
  values = dict(config.model.items(), stochastic=config.objective.name != "ae")
  model = vae_lib.VAE.from_config(values, info.image_shape)
  objectives.check_estimator(model, config.objective.name, config.objective.estimator)
  return model
