"""The model zoo: trained parameters kept in the repository, loaded by name.

An entry is a folder `<zoo>/<name>/` (the zoo is $VAE_JAX_ZOO_DIR, or `zoo/` at
the repository's root) holding

  params.npz    every leaf of the parameter pytree as a plain array (float32 or
                float16), keyed by its tree path (`jax.tree_util.keystr`);
                read with `np.load(allow_pickle=False)`: nothing is unpickled
  config.json   the run's config (data folders blanked: they are the trainer's)
  results.json  the run's final test metrics, as its workdir has them
  entry.json    where it came from: the workdir, step, storage dtype, the
                largest rounding error of the stored values, and the SHA-256
                of params.npz (checked on every load)

`load_pretrained(name)` rebuilds the model from config.json and restores the
arrays into the parameter template of that model (`workdir.state_template`),
so any model family the config can describe loads, and a file that does not
fit the model (a missing, extra or misshapen leaf) is an error, never a guess.
`export(workdir, name)` writes an entry from a trained workdir.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import re
import shutil

import jax
import ml_collections
import numpy as np

from vae_jax.models import build
from vae_jax.models import vae as vae_lib
from vae_jax.run import checkpoints as checkpoints_lib
from vae_jax.run import workdir as workdir_lib

ZOO_ENV = "VAE_JAX_ZOO_DIR"
DTYPES = ("float32", "float16")
_NAME = re.compile(r"[a-z0-9][a-z0-9_]*")


def zoo_dir(zoo: str | None = None) -> str:
  """The zoo folder: `zoo`, else $VAE_JAX_ZOO_DIR, else <repository>/zoo."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return zoo or os.environ.get(ZOO_ENV) or os.path.join(root, "zoo")


def available(zoo: str | None = None) -> list[str]:
  """Names of the entries of the zoo, sorted."""
  folder = zoo_dir(zoo)
  if not os.path.isdir(folder):
    return []
  return sorted(name for name in os.listdir(folder)
                if os.path.exists(os.path.join(folder, name, "entry.json")))


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _read_json(path: str):
  with open(path) as f:
    return json.load(f)


def finished_results(workdir: str) -> dict:
  """The results.json of a finished run.

  Raises:
    ValueError: the run has not finished, or a result is not finite.
  """
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    raise ValueError(f"{workdir} has no results.json: the run has not finished; finish it"
                     " (rerun its training command) first.")
  results = _read_json(path)
  if not all(math.isfinite(v) for v in results.values() if isinstance(v, float)):
    raise ValueError(f"{path} holds a non-finite number; a diverged run is neither exported nor published.")
  return results


def _command(workdir: str) -> str | None:
  """The training command recorded in the workdir (launch.json of experiments.reproduce, or run.json)."""
  for file in ("launch.json", "run.json"):
    if os.path.exists(os.path.join(workdir, file)):
      return _read_json(os.path.join(workdir, file)).get("command")
  return None


def entry_dir(name: str, zoo: str | None = None) -> str:
  """The folder of entry `name`.

  Raises:
    ValueError: no such entry (one line listing the available names).
  """
  names = available(zoo)
  if name not in names:
    raise ValueError(f"no pretrained model {name!r} in {zoo_dir(zoo)}; available:"
                     f" {', '.join(names) if names else 'none yet'}.")
  return os.path.join(zoo_dir(zoo), name)


def recorded_results(name: str, zoo: str | None = None) -> dict:
  """The final test metrics recorded when entry `name` was trained (its results.json)."""
  return _read_json(os.path.join(entry_dir(name, zoo), "results.json"))


def restore_params(path: str, template):
  """The arrays of `path` (params.npz) in the structure and dtypes of `template`.

  Raises:
    ValueError: the file lacks a leaf of the template, has one more, or one of
      another shape.
  """
  leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
  names = [jax.tree_util.keystr(p) for p, _ in leaves]
  with np.load(path, allow_pickle=False) as stored:
    differ = sorted(set(names) ^ set(stored.files))
    if differ:
      where = "missing in the file" if differ[0] in names else "not in the model"
      raise ValueError(f"{path} does not fit the model of its config.json ({differ[0]} {where}).")
    arrays = []
    for name, (_, leaf) in zip(names, leaves):
      array = stored[name]
      if array.shape != np.shape(leaf):
        raise ValueError(f"{path} does not fit the model of its config.json ({name}: shape"
                         f" {list(array.shape)} in the file, {list(np.shape(leaf))} in the model).")
      arrays.append(jax.numpy.asarray(array, dtype=leaf.dtype))
  return jax.tree_util.tree_unflatten(treedef, arrays)


def load_pretrained(name: str, zoo: str | None = None) -> tuple[ml_collections.ConfigDict, vae_lib.VAE, dict]:
  """(config, model, params) of zoo entry `name`, as `workdir.load_trained` gives them for a workdir.

  Raises:
    ValueError: no entry `name`, its params.npz changed since it was exported
      (SHA-256), or it does not fit the model its config describes.
  """
  folder = entry_dir(name, zoo)
  path = os.path.join(folder, "params.npz")
  entry = _read_json(os.path.join(folder, "entry.json"))
  if _sha256(path) != entry["params_sha256"]:
    raise ValueError(f"{path} is not the file that was exported (SHA-256 differs); restore it"
                     " with git checkout or export the entry again.")
  config = workdir_lib.load_config(folder)
  model = build.build_model(config)
  params = restore_params(path, workdir_lib.state_template(config, model).params)
  return config, model, params


def export(workdir: str, name: str, dtype: str = "float32", zoo: str | None = None) -> str:
  """Writes zoo entry `name` from the newest good checkpoint of a finished `workdir`; returns its folder.

  Args:
    workdir: a workdir holding results.json (a finished run).
    name: the entry's name: lower-case letters, digits and underscores.
    dtype: storage dtype of the parameters, "float32" (exact) or "float16"
      (half the size; relative rounding error ≤ 2^-11 for |θ| ≥ 2^-14).
    zoo: the zoo folder (default `zoo_dir()`).

  Raises:
    ValueError: a bad name or dtype, an entry of that name exists (it is never
      overwritten), the run has not finished, or a parameter is not finite in
      the storage dtype.
  """
  if not _NAME.fullmatch(name or ""):
    raise ValueError(f"zoo name {name!r}: use lower-case letters, digits and underscores, e.g. iwae_1layer_k5.")
  if dtype not in DTYPES:
    raise ValueError(f"dtype={dtype!r}: choose float32 (exact) or float16 (half the size).")
  folder = os.path.join(zoo_dir(zoo), name)
  if os.path.exists(folder):
    raise ValueError(f"{folder} exists; remove it first (git rm -r) to replace that entry, or choose another name.")
  results = finished_results(workdir)
  config, _, params = workdir_lib.load_trained(workdir)
  store = checkpoints_lib.CheckpointStore(workdir, keep=config.training.keep_checkpoints)
  try:
    newest = store.steps()[-1]
  finally:
    store.close()
  if newest != results.get("step"):
    raise ValueError(f"the newest good checkpoint of {workdir} is step {newest}, results.json is of step"
                     f" {results.get('step')}; rerun its training command to restore the final state.")
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]
  arrays, worst = {}, 0.0
  for path, leaf in leaves:
    exact = np.asarray(leaf, np.float32)
    stored = exact.astype(dtype)
    if not np.all(np.isfinite(stored)):
      raise ValueError(f"parameter {jax.tree_util.keystr(path)} of {workdir} is not finite in {dtype}"
                       " (NaN, inf or beyond float16's range); export it with dtype=float32.")
    error = np.abs(stored.astype(np.float32) - exact) / np.maximum(np.abs(exact), 2.0**-14)
    worst = max(worst, float(error.max(initial=0.0)))
    arrays[jax.tree_util.keystr(path)] = stored
  tmp = folder + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  np.savez_compressed(os.path.join(tmp, "params.npz"), **arrays)
  saved = json.loads(config.to_json_best_effort())
  saved["data"].update(raw_data_dir="", data_dir="")
  entry = {"name": name, "workdir": os.path.abspath(workdir), "step": results.get("step"),
           "command": _command(workdir), "dtype": dtype, "num_params": int(sum(a.size for a in arrays.values())),
           "max_relative_rounding_error": worst,
           "exported": datetime.datetime.now().isoformat(timespec="seconds"),
           "params_sha256": _sha256(os.path.join(tmp, "params.npz"))}
  for file, record in (("config.json", saved), ("results.json", results), ("entry.json", entry)):
    with open(os.path.join(tmp, file), "w") as f:
      json.dump(record, f, indent=2)
  os.replace(tmp, folder)
  return folder
