"""Reliability: kills, corrupt checkpoints, NaNs, unusable disks, untrusted files (issue 10).

The kill test runs `python -m experiments.train` as a subprocess and SIGKILLs
it at chosen points (via `tests/fault_injection/sitecustomize.py`), then
reruns the same command until it finishes, and compares everything with an
uninterrupted run.
"""
import errno
import fnmatch
import hashlib
import json
import os
import pathlib
import pickle
import shutil
import signal
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import REPO, tiny_config

FAULT_INJECTION = REPO / "tests" / "fault_injection"
WALL_TIME_KEYS = ("wall_time", "train_wall_time_s")

# 256 images, batch 32: 8 steps per epoch, 3 epochs, a checkpoint every 2 steps.
TINY_FLAGS = (
    "--config.training.tensorboard=False", "--config.training.progress_bar=False",
    "--config.data.train_subset=256", "--config.model.hidden_widths=(16,)",
    "--config.model.latent_dim=2", "--config.training.batch_size=32",
    "--config.training.num_epochs=3", "--config.training.steps_per_scan=2",
    "--config.training.log_every_steps=1", "--config.training.checkpoint_every_steps=2",
    "--config.eval.num_examples=100", "--config.eval.batch_size=100",
    "--config.eval.is_num_samples=10", "--config.eval.is_chunk_size=10",
    "--config.eval.write_images=False", "--config.eval.write_figures=False")


def train_command(workdir, raw_data, tfds_data_dir, *flags):
  return [sys.executable, "-m", "experiments.train", "--config=experiments/configs/default.py",
          f"--workdir={workdir}", f"--config.data.raw_data_dir={raw_data}",
          f"--config.data.data_dir={tfds_data_dir}", *TINY_FLAGS, *flags]


def run(command, timeout=300, **env):
  """Runs `command` in the repo root; `env` adds variables (fault injection on PYTHONPATH)."""
  full_env = {k: v for k, v in os.environ.items() if not k.startswith("VAE_JAX_KILL")}
  full_env.update(PYTHONPATH=os.pathsep.join([str(FAULT_INJECTION), str(REPO)]), **env)
  return subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True,
                        timeout=timeout)


def final_state_arrays(workdir):
  """The arrays of the newest checkpoint, read with orbax directly (not via vae_jax)."""
  directory = pathlib.Path(workdir) / "checkpoints"
  step = max(int(p.name) for p in directory.iterdir() if p.name.isdigit())
  tree = ocp.StandardCheckpointer().restore(directory / str(step) / "state")
  return step, {jax_path: np.asarray(leaf) for jax_path, leaf in _flatten(tree)}


def _flatten(tree, prefix=""):
  if isinstance(tree, dict):
    for key in sorted(tree):
      yield from _flatten(tree[key], f"{prefix}/{key}")
  elif isinstance(tree, (list, tuple)):
    for i, item in enumerate(tree):
      yield from _flatten(item, f"{prefix}/{i}")
  else:
    yield prefix, tree


def metrics_without_times(workdir):
  records = [json.loads(line) for line in open(pathlib.Path(workdir) / "metrics.jsonl")]
  return [{k: v for k, v in r.items() if k not in WALL_TIME_KEYS} for r in records]


def snapshot(directory):
  """{relative path: sha256} of every file under `directory` (None if it does not exist)."""
  directory = pathlib.Path(directory)
  if not directory.exists():
    return None
  return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(directory.rglob("*")) if p.is_file()}


# Where to kill, in the order a run passes them (fnmatch patterns over the
# points of tests/fault_injection/sitecustomize.py). Each launch is killed at
# the first point matching its pattern (None: at a random moment, here of a
# launch that restores the last checkpoint and evaluates); the next resumes.
KILL_POINTS = (
    "before replace */config.json.tmp",
    "after replace */config.json.tmp",
    "before fsync */metrics.jsonl.tmp",             # truncating metrics to the checkpoint
    "before replace */metrics.jsonl.tmp",
    "after replace */metrics.jsonl.tmp",
    "before fsync */metrics.jsonl",                 # metrics flushed before checkpoint 2
    "after fsync */metrics.jsonl",
    "before rename */checkpoints/2.orbax-checkpoint-tmp/meta.orbax-checkpoint-tmp",
    "before rename */checkpoints/2.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp",
    "before rename */checkpoints/2.orbax-checkpoint-tmp",    # written, not finalised
    "after rename */checkpoints/2.orbax-checkpoint-tmp",     # finalised
    "after rename */checkpoints/4.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp",
    "before rename */checkpoints/6.orbax-checkpoint-tmp",
    "before rename */checkpoints/8.orbax-checkpoint-tmp",    # after the epoch-1 evaluation
    "before rmtree */checkpoints/2",                          # deleting the oldest checkpoint
    "after rmtree */checkpoints/4",
    "before rename */checkpoints/14.orbax-checkpoint-tmp/meta.orbax-checkpoint-tmp",
    "after rename */checkpoints/16.orbax-checkpoint-tmp",
    "before rename */checkpoints/20.orbax-checkpoint-tmp",
    "before rename */checkpoints/24.orbax-checkpoint-tmp",   # the last checkpoint
    "after rename */checkpoints/24.orbax-checkpoint-tmp",
    "after fsync */metrics.jsonl",                  # test metrics written, results.json not yet
    "before replace */results.json.tmp",
    None, None, None,                               # at random moments of the last launch
)


def kill_after(command, delay, **env):
  """Starts `command` and SIGKILLs it after `delay` seconds (if it still runs)."""
  process = subprocess.Popen(command, cwd=REPO, env=dict(os.environ, **env),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    process.wait(timeout=delay)
  except subprocess.TimeoutExpired:
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_sigkill_at_many_points_then_rerun_is_bit_identical(raw_data, tfds_data_dir, tmp_path):
  # XLA's compilation cache only makes the ~30 launches cheaper (the reference fills it).
  cache = dict(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  reference = tmp_path / "reference"
  done = run(train_command(reference, raw_data, tfds_data_dir), **cache)
  assert done.returncode == 0, done.stderr

  workdir = tmp_path / "killed"
  command = train_command(workdir, raw_data, tfds_data_dir)
  log = tmp_path / "kills.log"
  killed_at = []
  delays = iter(np.random.default_rng(0).uniform(0.5, 6.0, size=KILL_POINTS.count(None)))
  for pattern in KILL_POINTS:
    if pattern is None:
      kill_after(command, next(delays), **cache)
      continue
    result = run(command, VAE_JAX_KILL_AT=pattern, VAE_JAX_KILL_LOG=str(log), **cache)
    assert result.returncode == -signal.SIGKILL, (pattern, result.returncode, result.stderr[-2000:])
    kills = [line for line in log.read_text().splitlines() if line.startswith("KILL ")]
    assert fnmatch.fnmatchcase(kills[-1].split(" ", 2)[2], pattern)
    killed_at.append(kills[-1].split(" ", 2)[2])
  finished = run(command, **cache)
  assert finished.returncode == 0, finished.stderr[-2000:]

  assert len(set(killed_at)) >= 20
  step, arrays = final_state_arrays(workdir)
  reference_step, reference_arrays = final_state_arrays(reference)
  assert step == reference_step == 24
  assert arrays.keys() == reference_arrays.keys()
  for name, array in arrays.items():
    assert array.dtype == reference_arrays[name].dtype
    np.testing.assert_array_equal(array, reference_arrays[name], err_msg=name)
  # Every record once, in order, with the same values as without kills.
  assert metrics_without_times(workdir) == metrics_without_times(reference)
  results, reference_results = (
      {k: v for k, v in json.load(open(w / "results.json")).items() if k not in WALL_TIME_KEYS}
      for w in (workdir, reference))
  assert results == reference_results
  assert not (workdir / "corrupt_checkpoints").exists()   # a kill never looks like corruption
