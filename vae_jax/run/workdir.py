"""The workdir of a run: its owner, what a rerun may change, and loading it back.

`train.train_and_evaluate` leaves `config.json`, orbax checkpoints, metrics and
`results.json` in the workdir. This module holds the rules around them:

* One owner: the training process holds an exclusive `fcntl` lock on
  `<workdir>/.lock` (which records its pid and host) for as long as it runs;
  a second training process on the same workdir stops with a one-line error
  naming the holder. The lock dies with its process (even under kill -9);
  the file stays, harmless. Readers (`load_trained`: evaluation, figures,
  applications) take no lock and never delete, move or create anything.
* Reruns (`rerun_plan`): a rerun continues the same run exactly, re-evaluates
  a finished run with new eval settings and says so, or stops with the reason.
  `config.json` always describes the run that produced `results.json`;
  results a rerun supersedes are kept in `previous_results/<time>/`.
* `load_trained` turns a workdir back into the config, the model spec and the
  parameters of the newest checkpoint that verifies.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time

import ml_collections

from vae_jax import config as config_lib
from vae_jax.models import build
from vae_jax.models import vae as vae_lib
from vae_jax.run import checkpoints as checkpoints_lib
from vae_jax.run import optimizers
from vae_jax.run import training

LOCK = ".lock"
# Fields a rerun may change: they change neither the parameters nor results.json.
FREE_FIELDS = frozenset((
    "data.raw_data_dir", "data.data_dir", "training.progress_bar", "training.tensorboard",
    "training.log_every_steps", "training.checkpoint_every_steps", "training.keep_checkpoints",
    "training.keep_checkpoints_every_steps", "training.eval_every_epochs",
    "eval.write_images", "eval.write_figures"))
# Fields that change only the evaluation: a finished run is re-evaluated.
EVAL_FIELDS = frozenset(("eval.batch_size", "eval.num_examples", "eval.is_num_samples",
                         "eval.is_chunk_size"))
# Every other field defines the run, except these two, with rules of their own.
EPOCHS, NAN_POLICY = "training.num_epochs", "training.nan_policy"


class WorkdirError(RuntimeError):
  """The workdir cannot be used (unwritable, owned by another process, or another run)."""


def resolve(workdir) -> str:
  """`workdir` with `~` expanded; refuses an empty path or one with control characters."""
  path = os.fspath(workdir)
  if not path.strip():
    raise WorkdirError("--workdir is empty; give a folder for the run, e.g. --workdir=workdirs/default.")
  if any(ord(c) < 32 or ord(c) == 127 for c in path):
    raise WorkdirError(f"workdir {path!r} holds a control character; choose a name without one.")
  return os.path.expanduser(path)


def prepare(workdir: str) -> None:
  """Creates `workdir` and checks it is writable and holds no entry of the wrong kind."""
  checkpoints_lib.check_path(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_probe_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise WorkdirError(
        f"workdir {workdir} is not writable ({e.strerror}); choose another --workdir"
        " or fix its permissions.") from e
  for name, folder in (("checkpoints", True), ("images", True), ("config.json", False),
                       ("metrics.jsonl", False), ("results.json", False)):
    entry = os.path.join(workdir, name)
    if os.path.exists(entry) and os.path.isdir(entry) != folder:
      raise WorkdirError(f"{entry} is not a {'folder' if folder else 'file'} as a run needs;"
                         " move it away or choose another --workdir.")


@contextlib.contextmanager
def owned(workdir: str):
  """Holds the workdir's lock while the block runs (see the module docstring).

  Raises:
    WorkdirError: another process holds it.
  """
  path = os.path.join(workdir, LOCK)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      raise WorkdirError(
          f"workdir {workdir} is in use by another training process ({_holder(fd)}); wait"
          " for it to end or stop it, or choose another --workdir.") from e
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    yield
  finally:
    os.close(fd)   # releases the lock


def _holder(fd: int) -> str:
  """What the lock file says about its holder (it may be writing it just now)."""
  for _ in range(20):
    text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    if text:
      return text
    time.sleep(0.05)
  return "pid unknown"


def previous_config(workdir: str) -> dict | None:
  """The run's config.json filled with the current defaults, or None if there is none.

  Fields added to the defaults after that run was written take their default,
  so that adding a config field never makes old workdirs unresumable.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      saved = json.load(f)
    if not isinstance(saved, dict):
      raise ValueError("it holds no JSON object")
    filled = config_lib.default_config()
    config_lib.update_from_dict(filled, saved)
  except (ValueError, TypeError, AttributeError, KeyError) as e:
    raise WorkdirError(
        f"{path} is not a valid config ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''});"
        " delete it to resume this workdir with this config (the checkpoints' shapes are"
        " still checked) or choose another --workdir.") from e
  return json.loads(filled.to_json_best_effort())


def flat_fields(tree: dict, prefix: str = "") -> dict:
  """{dotted name: value} of a nested dict (a config as JSON)."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flat_fields(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def changed_fields(previous: dict | None, config: ml_collections.ConfigDict,
                   workdir: str) -> list[str]:
  """The dotted fields in which `config` differs from the run's `previous` config.

  Raises:
    WorkdirError: a field that defines the run differs (the model, the data,
      the objective, the optimizer, the seed, the batch size, the steps fused
      per scan, ...: every field outside FREE_FIELDS, EVAL_FIELDS, EPOCHS and
      NAN_POLICY, new fields included).
  """
  if previous is None:
    return []
  before, now = flat_fields(previous), flat_fields(json.loads(config.to_json_best_effort()))
  changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
  defining = [k for k in changed if k not in FREE_FIELDS | EVAL_FIELDS | {EPOCHS, NAN_POLICY}]
  if defining:
    details = ", ".join(f"{k}: {before.get(k)!r} there, {now.get(k)!r} here" for k in defining[:3])
    raise WorkdirError(
        f"workdir {workdir} holds a run with a different {', '.join(defining)} ({details});"
        " use a new --workdir, or the config of that run to resume it.")
  return changed


def rerun_plan(previous: dict | None, config: ml_collections.ConfigDict, *, step: int,
               skipped: int, total_steps: int, steps_per_epoch: int, workdir: str) -> str:
  """What a run of `config` in a workdir that holds `previous` and a state at `step` does.

  Returns:
    "train": train from `step` (a new run, or the same run continued, or a
    finished run with a constant learning rate given more epochs, whose
    results.json is then superseded); "done": nothing to do (a finished run,
    changed at most in fields that change nothing); "reevaluate": a finished
    run whose eval settings changed.

  Raises:
    WorkdirError: the rerun would change the run, with the reason and the fix.
  """
  if previous is None:
    return "train" if step < total_steps else "done"
  changed = changed_fields(previous, config, workdir)
  before, now = flat_fields(previous), flat_fields(json.loads(config.to_json_best_effort()))
  if NAN_POLICY in changed and skipped:
    raise WorkdirError(
        f"workdir {workdir} holds a run that skipped {skipped} non-finite updates under"
        f" training.nan_policy={before[NAN_POLICY]!r}; with {now[NAN_POLICY]!r} no run"
        " reproduces it: use a new --workdir, or training.nan_policy=skip to resume it.")
  epochs_before = before[EPOCHS]
  if EPOCHS in changed:
    if config.optimizer.schedule != "constant":
      raise WorkdirError(
          f"workdir {workdir} holds a run of num_epochs={epochs_before} whose"
          f" {config.optimizer.schedule} learning-rate schedule depends on the total number of"
          f" steps; with num_epochs={config.training.num_epochs} no fresh run would reproduce"
          " it: use a new --workdir (or the run's num_epochs).")
    if step > total_steps:
      raise WorkdirError(
          f"workdir {workdir} holds a run already trained for {step / steps_per_epoch:g} epochs"
          f" (step {step}), more than num_epochs={config.training.num_epochs}; use a new"
          f" --workdir, or num_epochs ≥ {epochs_before} to go on.")
  if step < total_steps:
    eval_changed = [k for k in changed if k in EVAL_FIELDS]
    if eval_changed:
      k = eval_changed[0]
      raise WorkdirError(
          f"workdir {workdir} holds an unfinished run evaluated with {k}={before[k]!r};"
          f" finish it with its eval settings, then rerun with {k}={now[k]!r} to re-evaluate"
          " it, or use python -m experiments.evaluate.")
    return "train"
  return "reevaluate" if any(k in EVAL_FIELDS for k in changed) else "done"


def set_aside(workdir: str) -> str | None:
  """Moves results.json (and a copy of config.json) to previous_results/<time>/; its path."""
  results = os.path.join(workdir, "results.json")
  if not os.path.exists(results):
    return None
  aside = os.path.join(workdir, "previous_results", time.strftime("%Y%m%d-%H%M%S"))
  while os.path.exists(aside):
    aside += "+"
  os.makedirs(aside)
  if os.path.exists(os.path.join(workdir, "config.json")):
    shutil.copy2(os.path.join(workdir, "config.json"), aside)
  os.replace(results, os.path.join(aside, "results.json"))
  return aside


def write_json(path: str, value) -> None:
  """Writes `value` as JSON to `path` atomically (a temporary file renamed)."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2)
  os.replace(tmp, path)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config of the run in `workdir`: `default_config()` updated with its config.json.

  Fields added to the defaults after the run was trained keep their defaults.

  Raises:
    FileNotFoundError: the workdir has no config.json (it holds no run).
  """
  path = os.path.join(resolve(workdir), "config.json")
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

  A reader: it works while a training process writes the workdir, and never
  deletes, moves or creates anything in it (a checkpoint that does not load,
  perhaps one being written, is skipped and left in place).

  Args:
    workdir: a folder written by `train.train_and_evaluate`.

  Returns:
    The run's config, its model spec (`build.build_model`) and the parameters
    of the newest checkpoint whose digest verifies (their moving average
    if the run kept one, `training.eval_params`).

  Raises:
    FileNotFoundError: no config.json, or no checkpoint that loads.
  """
  workdir = resolve(workdir)
  config = load_config(workdir)
  model = build.build_model(config)
  template = state_template(config, model)
  with checkpoints_lib.CheckpointStore(workdir, read_only=True) as store:
    state, _ = store.restore_latest(template)
  if state is None:
    raise FileNotFoundError(
        f"{os.path.join(workdir, 'checkpoints')} holds no checkpoint that loads; train the"
        " model first (python -m experiments.train --workdir=...).")
  return config, model, training.eval_params(state)
