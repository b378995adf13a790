"""Experiment trackers beside metrics.jsonl and TensorBoard: Weights & Biases and MLflow.

Both are optional (`pip install -e ".[trackers]"`) and off by default:

  --config.logging.wandb=True [--config.logging.wandb_mode=offline]
  --config.logging.mlflow_uri=file:./mlruns      (or http://host:5000, sqlite:///mlflow.db)

`metrics.MetricsWriter` hands every record it writes to each tracker of
`from_config(config, workdir)` as `log(step, split, scalars)`; a tracker logs
the finite scalars under "<split>/<name>" (the TensorBoard tags) at that step,
with the config as W&B config / MLflow params. A resumed run continues the same
W&B and MLflow runs: their ids are kept in `<workdir>/trackers.json`. Only
process 0 logs (the other processes of a multi-host run write no metrics).
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import math
import os
import time

import ml_collections

WANDB_MODES = ("online", "offline")
_IDS_FILE = "trackers.json"


def check_config(logging_config: ml_collections.ConfigDict) -> None:
  """Raises a one-line ValueError for an unknown W&B mode or a tracker whose package is missing."""
  if logging_config.wandb_mode not in WANDB_MODES:
    raise ValueError(f"config.logging.wandb_mode={logging_config.wandb_mode!r}: unknown mode;"
                     f" choose one of {', '.join(WANDB_MODES)}.")
  for field, package in (("wandb", "wandb"), ("mlflow_uri", "mlflow")):
    if logging_config[field] and importlib.util.find_spec(package) is None:
      raise ValueError(
          f"config.logging.{field}={logging_config[field]!r}: the {package} package is not"
          f' installed; pip install -e ".[trackers]" or leave config.logging.{field} unset.')


def _finite_scalars(split: str, scalars: dict) -> dict[str, float]:
  """{"<split>/<name>": value} of the finite numbers (nothing non-finite is reported)."""
  out = {}
  for name, value in scalars.items():
    try:
      value = float(value)
    except (TypeError, ValueError):
      continue
    if math.isfinite(value):
      out[f"{split}/{name}"] = value
  return out


class WandbTracker:
  """A W&B run in `<workdir>/wandb/`, with "step" as the x-axis of every metric."""

  def __init__(self, project: str, mode: str, name: str, directory: str, config: dict,
               run_id: str | None = None):
    import wandb  # pylint: disable=g-import-not-at-top
    self.run = wandb.init(project=project, mode=mode, name=name, dir=directory, config=config,
                          id=run_id, resume="allow", reinit="create_new",
                          settings=wandb.Settings(console="off", quiet=True))
    self.run_id = self.run.id
    self.run.define_metric("step")
    for split in ("train", "validation", "test"):
      self.run.define_metric(f"{split}/*", step_metric="step")

  def log(self, step: int, split: str, scalars: dict) -> None:
    metrics = _finite_scalars(split, scalars)
    if metrics:
      self.run.log({**metrics, "step": int(step)})

  def close(self) -> None:
    self.run.finish()


class MlflowTracker:
  """An MLflow run (through `MlflowClient`, so no global MLflow state is touched)."""

  def __init__(self, uri: str, experiment: str, name: str, params: dict,
               run_id: str | None = None):
    from mlflow import entities  # pylint: disable=g-import-not-at-top
    from mlflow import exceptions  # pylint: disable=g-import-not-at-top
    from mlflow import tracking  # pylint: disable=g-import-not-at-top
    self._entities = entities
    self._client = tracking.MlflowClient(tracking_uri=uri)
    if run_id is not None:
      try:
        self._client.update_run(run_id, status="RUNNING")
      except exceptions.MlflowException:  # not in this store (another URI): start a new run
        run_id = None
    if run_id is None:
      found = self._client.get_experiment_by_name(experiment)
      experiment_id = found.experiment_id if found else self._client.create_experiment(experiment)
      run_id = self._client.create_run(experiment_id, run_name=name).info.run_id
      items = [entities.Param(k, str(v)[:500]) for k, v in params.items()]
      for start in range(0, len(items), 100):   # MLflow takes at most 100 params per batch
        self._client.log_batch(run_id, params=items[start:start + 100])
    self.run_id = run_id
    self._closed = False
    atexit.register(self._end, "FAILED")   # a run stopped by an error is not left RUNNING

  def log(self, step: int, split: str, scalars: dict) -> None:
    now = int(time.time() * 1000)
    metrics = [self._entities.Metric(k, v, now, int(step))
               for k, v in _finite_scalars(split, scalars).items()]
    if metrics:
      self._client.log_batch(self.run_id, metrics=metrics)

  def _end(self, status: str) -> None:
    if not self._closed:
      self._closed = True
      self._client.set_terminated(self.run_id, status)

  def close(self) -> None:
    self._end("FINISHED")


def _read_ids(workdir: str) -> dict:
  try:
    with open(os.path.join(workdir, _IDS_FILE)) as f:
      ids = json.load(f)
    return ids if isinstance(ids, dict) else {}
  except (OSError, ValueError):
    return {}


def _write_ids(workdir: str, ids: dict) -> None:
  path = os.path.join(workdir, _IDS_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump(ids, f, indent=2)
  os.replace(path + ".tmp", path)


def from_config(config: ml_collections.ConfigDict, workdir: str) -> list:
  """The trackers `config.logging` asks for (an empty list by default), resuming earlier runs."""
  from vae_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  logging_config = config.logging
  check_config(logging_config)
  if not (logging_config.wandb or logging_config.mlflow_uri):
    return []
  name = os.path.basename(os.path.normpath(os.path.abspath(workdir)))
  ids, trackers = _read_ids(workdir), []
  if logging_config.wandb:
    trackers.append(WandbTracker(logging_config.wandb_project, logging_config.wandb_mode, name,
                                 workdir, config.to_dict(), ids.get("wandb")))
    ids["wandb"] = trackers[-1].run_id
  if logging_config.mlflow_uri:
    params = {field: value for field, value, _ in config_lib.documented_fields(config)}
    trackers.append(MlflowTracker(logging_config.mlflow_uri, logging_config.mlflow_experiment,
                                  name, params, ids.get("mlflow")))
    ids["mlflow"] = trackers[-1].run_id
  _write_ids(workdir, ids)
  return trackers
