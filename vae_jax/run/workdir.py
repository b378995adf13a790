"""Loading a trained model back from its workdir.

`train.train_and_evaluate` leaves `config.json` and orbax checkpoints in the
workdir; `load_trained` turns them back into the config, the model spec and the
parameters of the newest checkpoint that verifies (`checkpoints.CheckpointStore`
checks each checkpoint's digest and falls back to an older one if it fails).
"""

from __future__ import annotations

import json
import os

import ml_collections

from vae_jax.models import build
from vae_jax.run import checkpoints as checkpoints_lib
from vae_jax import config as config_lib
from vae_jax.run import optimizers
from vae_jax.run import training
from vae_jax.models import vae as vae_lib


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config of the run in `workdir`: `default_config()` updated with its config.json.

  Fields added to the defaults after the run was trained keep their defaults.

  Raises:
    FileNotFoundError: the workdir has no config.json (it holds no run).
  """
  path = os.path.join(os.fspath(workdir), "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} does not exist; give a workdir written by experiments.train.")
  with open(path) as f:
    saved = json.load(f)
  config = config_lib.default_config()
  config_lib.update_from_dict(config, saved)
  return config


def state_template(config: ml_collections.ConfigDict, model: vae_lib.VAE) -> training.TrainState:
  """A `TrainState` of the run's structure and shapes, to restore its checkpoints into."""
  # The optimizer state's structure does not depend on the number of steps.
  optimizer = optimizers.make_optimizer(config.optimizer, total_steps=1)
  return training.state_from_config(config, model, optimizer)


def load_trained(workdir: str) -> tuple[ml_collections.ConfigDict, vae_lib.VAE, dict]:
  """(config, model, params) of the newest good checkpoint in `workdir`.

  Args:
    workdir: a folder written by `train.train_and_evaluate`.

  Returns:
    The run's config, its model spec (`build.build_model`) and the parameters
    of the newest checkpoint whose digest verifies (their moving average
    if the run kept one, `training.eval_params`).

  Raises:
    FileNotFoundError: no config.json, or no checkpoint that loads.
  """
  config = load_config(workdir)
  model = build.build_model(config)
  template = state_template(config, model)
  store = checkpoints_lib.CheckpointStore(workdir, keep=config.training.keep_checkpoints)
  try:
    state, _ = store.restore_latest(template)
  finally:
    store.close()
  if state is None:
    raise FileNotFoundError(
        f"{os.path.join(workdir, 'checkpoints')} holds no checkpoint that loads; train the"
        " model first (python -m experiments.train --workdir=...).")
  return config, model, training.eval_params(state)
