"""Reliability: kills, corrupt checkpoints, NaNs, unusable disks, untrusted files (issue 10).

The kill test runs `python -m experiments.train` as a subprocess and SIGKILLs
it at chosen points (via `tests/fault_injection/sitecustomize.py`), then
reruns the same command until it finishes, and compares everything with an
uninterrupted run.
"""
import fnmatch
import hashlib
import json
import os
import pathlib
import pickle
import re
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import REPO, tiny_config
from vae_jax.models import build
from vae_jax.run import checkpoints as checkpoints_lib
from vae_jax.applications import compression
from vae_jax.run import optimizers
from vae_jax.datasets import raw_data
from vae_jax.run import train
from vae_jax.run import training

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
  """The tiny run's command line; `flags` replace the tiny flags of the same name."""
  given = {flag.split("=")[0] for flag in flags}
  tiny = [flag for flag in TINY_FLAGS if flag.split("=")[0] not in given]
  return [sys.executable, "-m", "experiments.train", "--config=experiments/configs/default.py",
          f"--workdir={workdir}", f"--config.data.raw_data_dir={raw_data}",
          f"--config.data.data_dir={tfds_data_dir}", *tiny, *flags]


def run(command, timeout=300, **env):
  """Runs `command` in the repo root, in its own process group; `env` adds variables.

  The fault injection of tests/fault_injection is on its PYTHONPATH (inactive
  unless a VAE_JAX_KILL_*/VAE_JAX_FAIL_AT variable is given).
  """
  full_env = {k: v for k, v in os.environ.items() if not k.startswith("VAE_JAX_KILL")}
  full_env.update(PYTHONPATH=os.pathsep.join([str(FAULT_INJECTION), str(REPO)]), **env)
  return subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True,
                        timeout=timeout, start_new_session=True)


def checkpoint_steps(workdir):
  directory = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def final_state_arrays(workdir, step=None):
  """The arrays of a checkpoint (default the newest), read with orbax directly (not via vae_jax)."""
  step = checkpoint_steps(workdir)[-1] if step is None else step
  path = pathlib.Path(workdir) / "checkpoints" / str(step) / "state"
  tree = ocp.StandardCheckpointer().restore(path)
  return step, {jax_path: np.asarray(leaf) for jax_path, leaf in _flatten(tree)}


def _flatten(tree, prefix=""):
  if isinstance(tree, dict):
    for key in sorted(tree):
      yield from _flatten(tree[key], f"{prefix}/{key}")
  elif isinstance(tree, (list, tuple)):
    for i, item in enumerate(tree):
      yield from _flatten(item, f"{prefix}/{i}")
  elif tree is not None:   # optax keeps empty states as None
    yield prefix, tree


def metrics_without_times(workdir):
  records = [json.loads(line) for line in open(pathlib.Path(workdir) / "metrics.jsonl")]
  return [{k: v for k, v in r.items() if k not in WALL_TIME_KEYS} for r in records]


def snapshot(directory):
  """{relative path: sha256} of every file under `directory` (None if it does not exist).

  The workdir's `.lock` is left out: it names the last process that owned it.
  """
  directory = pathlib.Path(directory)
  if not directory.exists():
    return None
  return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(directory.rglob("*")) if p.is_file() and p.name != ".lock"}


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


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  """XLA's compilation cache: it only makes the many launches cheaper (a reference fills it)."""
  return dict(JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


@pytest.fixture(scope="module")
def reference(raw_data, tfds_data_dir, tmp_path_factory, cache):
  """The workdir of the tiny command line run, uninterrupted."""
  workdir = tmp_path_factory.mktemp("reference")
  done = run(train_command(workdir, raw_data, tfds_data_dir), **cache)
  assert done.returncode == 0, done.stderr
  return workdir


def assert_same_run(workdir, reference):
  """Bit-identical final state, and the same metrics records (no gap, no duplicate) and results."""
  step, arrays = final_state_arrays(workdir)
  reference_step, reference_arrays = final_state_arrays(reference)
  assert step == reference_step
  assert arrays.keys() == reference_arrays.keys()
  for name, array in arrays.items():
    assert array.dtype == reference_arrays[name].dtype
    np.testing.assert_array_equal(array, reference_arrays[name], err_msg=name)
  assert metrics_without_times(workdir) == metrics_without_times(reference)
  results, reference_results = (
      {k: v for k, v in json.load(open(w / "results.json")).items() if k not in WALL_TIME_KEYS}
      for w in (workdir, reference))
  assert results == reference_results


def test_sigkill_at_many_points_then_rerun_is_bit_identical(raw_data, tfds_data_dir, tmp_path,
                                                            reference, cache):
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
  assert_same_run(workdir, reference)
  assert final_state_arrays(workdir)[0] == 24
  assert not (workdir / "corrupt_checkpoints").exists()   # a kill never looks like corruption


# A path orbax once globbed ('[' ']', '*', '?'), with a space, non-ASCII, '%' and a
# trailing slash: killed twice, it resumes as if nothing happened (issue 18).
NASTY_PATH = "runs [1] ünï%20*?/"


def test_any_workdir_path_trains_kills_and_resumes_bit_identically(raw_data, tfds_data_dir,
                                                                    tmp_path, reference, cache):
  workdir = tmp_path / NASTY_PATH
  command = train_command(f"{tmp_path}/{NASTY_PATH}", raw_data, tfds_data_dir)
  for pattern in ("after rename */checkpoints/4.orbax-checkpoint-tmp",
                  "before rename */checkpoints/14.orbax-checkpoint-tmp"):
    result = run(command, VAE_JAX_KILL_AT=pattern, **cache)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
  assert run(command, **cache).returncode == 0
  assert sorted(os.listdir(tmp_path)) == [NASTY_PATH.rstrip("/")]   # nothing written elsewhere
  assert not (workdir / "corrupt_checkpoints").exists()
  plain = tmp_path / "plain"            # orbax's own reader (the independent check) globs
  shutil.copytree(workdir, plain)
  assert_same_run(plain, reference)


@pytest.mark.parametrize("signal_name, status", [("INT", 130), ("TERM", 143)])
def test_a_signal_during_a_checkpoint_ends_in_one_line_after_it_and_rerun_is_bit_identical(
    signal_name, status, raw_data, tfds_data_dir, tmp_path, reference, cache):
  workdir = tmp_path / "workdir"
  command = train_command(workdir, raw_data, tfds_data_dir)
  result = run(command, VAE_JAX_SIGNAL=signal_name, **cache,
               VAE_JAX_SIGNAL_AT="before rename */checkpoints/4.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp")
  lines = result.stderr.strip().splitlines()
  assert result.returncode == status, result.stderr[-3000:]
  assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
  assert lines[-1].startswith(f"error: interrupted by SIG{signal_name}; rerun the same command")
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]   # the one being written finished
  assert run(command, **cache).returncode == 0
  assert_same_run(workdir, reference)


# ------------------------------------------------------------ corrupt checkpoints

@pytest.fixture(scope="module")
def api_run(raw_data, tfds_data_dir, tmp_path_factory):
  """A finished tiny run through the API: 32 steps, checkpoints 16, 24, 32 kept."""
  config = tiny_config(raw_data, tfds_data_dir, eval__is_num_samples=0)
  workdir = tmp_path_factory.mktemp("api_run")
  train.train_and_evaluate(config, str(workdir))
  assert checkpoint_steps(workdir) == [16, 24, 32]
  return config, workdir


def _largest_file(directory):
  return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _truncate(checkpoint):
  data = _largest_file(checkpoint / "state")
  data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])


def _garble(checkpoint):
  data = _largest_file(checkpoint / "state")
  blob = bytearray(data.read_bytes())
  middle = len(blob) // 2
  blob[middle:middle + 256] = np.random.default_rng(0).integers(0, 256, 256, np.uint8).tobytes()
  data.write_bytes(bytes(blob))


def _wrong_digest(checkpoint):
  meta = json.loads((checkpoint / "meta" / "metadata").read_text())
  (checkpoint / "meta" / "metadata").write_text(json.dumps(dict(meta, digest="0" * 64)))


CORRUPTIONS = {
    "truncated_arrays": _truncate,
    "garbled_arrays": _garble,
    "garbled_meta": lambda c: (c / "meta" / "metadata").write_text('{"step": 32, "dig'),
    "digest_mismatch": _wrong_digest,
    "missing_state": lambda c: shutil.rmtree(c / "state"),
    "emptied_files": lambda c: [p.write_bytes(b"") for p in c.rglob("*") if p.is_file()],
}


def initial_state(config):
  model = build.build_model(config)
  optimizer = optimizers.make_optimizer(config.optimizer, 32)
  return training.init_state(model, optimizer, config.seed, config.objective.beta)


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_latest_checkpoint_falls_back_and_keeps_everything(kind, api_run, tmp_path, capsys):
  config, original = api_run
  workdir = tmp_path / "workdir"
  shutil.copytree(original, workdir)
  checkpoints = workdir / "checkpoints"
  good = {step: snapshot(checkpoints / str(step)) for step in (16, 24)}
  CORRUPTIONS[kind](checkpoints / "32")
  corrupted = snapshot(checkpoints / "32")

  store = checkpoints_lib.CheckpointStore(str(workdir), 3)
  restored, meta = store.restore_latest(initial_state(config))
  store.close()
  assert meta["step"] == 24 and int(restored.step) == 24
  out = capsys.readouterr().out
  assert "checkpoint of step 32 is corrupt" in out and "corrupt_checkpoints" in out
  (aside,) = (workdir / "corrupt_checkpoints").iterdir()
  assert aside.name.startswith("32-") and snapshot(aside) == corrupted   # moved, not deleted
  assert {step: snapshot(checkpoints / str(step)) for step in (16, 24)} == good


def test_rerun_after_corruption_is_bit_identical(api_run, tmp_path):
  config, original = api_run
  workdir = tmp_path / "workdir"
  shutil.copytree(original, workdir)
  _garble(workdir / "checkpoints" / "32")
  (workdir / "results.json").unlink()
  train.train_and_evaluate(config, str(workdir))   # falls back to step 24, trains 24 -> 32
  assert_same_run(workdir, original)


def test_all_checkpoints_corrupt_starts_over_and_deletes_nothing(api_run, tmp_path, capsys):
  config, original = api_run
  workdir = tmp_path / "workdir"
  shutil.copytree(original, workdir)
  for step in (16, 24, 32):
    _garble(workdir / "checkpoints" / str(step))
  store = checkpoints_lib.CheckpointStore(str(workdir), 3)
  assert store.restore_latest(initial_state(config)) == (None, None)
  store.close()
  assert sorted(p.name.split("-")[0] for p in (workdir / "corrupt_checkpoints").iterdir()) == [
      "16", "24", "32"]
  assert capsys.readouterr().out.count("is corrupt") == 3


# ------------------------------------------------------------------------ NaN

DIVERGING = ("--config.optimizer.schedule=exponential", "--config.optimizer.decay_rate=1e25")


def test_nan_stops_naming_the_step_and_the_last_good_checkpoint_or_is_skipped(
    raw_data, tfds_data_dir, tmp_path, cache):
  stopped = tmp_path / "stop"
  result = run(train_command(stopped, raw_data, tfds_data_dir, *DIVERGING), **cache)
  assert result.returncode == 1
  error = result.stderr.strip().splitlines()[-1]
  match = re.fullmatch(r"error: the loss, gradients or updated parameters became NaN/inf at step"
                       r" (\d+); the last good"
                       r" checkpoint is step (\d+) in (\S+) \(kept\); .*nan_policy=skip\.", error)
  assert match, error
  bad_step, good_step = int(match.group(1)), int(match.group(2))
  assert match.group(3) == str(stopped / "checkpoints")
  assert 0 < good_step < bad_step and checkpoint_steps(stopped)[-1] == good_step
  for step in checkpoint_steps(stopped):       # no NaN/inf checkpoint
    assert all(np.isfinite(a).all() for a in final_state_arrays(stopped, step)[1].values())

  # Skipped, the run goes on to a finite model whose θ has grown so large (η ~ 1e25) that
  # its test evaluation is NaN: refused as a result (the old code wrote it, exit 0).
  skipped = tmp_path / "skip"
  result = run(train_command(skipped, raw_data, tfds_data_dir, *DIVERGING,
                             "--config.training.nan_policy=skip"), **cache)
  assert_one_line_error(result, "the test evaluation gave")
  assert "(NaN/inf), not written as a result" in result.stderr
  assert not (skipped / "results.json").exists()
  train_records = [r for r in metrics_without_times(skipped) if r["split"] == "train"]
  dropped = [r["step"] for r in train_records if r["finite"] == 0]
  assert dropped and dropped[0] == bad_step     # the same step as the stopped run
  assert len(train_records) == 24               # trained to the end
  for step in checkpoint_steps(skipped):
    assert all(np.isfinite(a).all() for a in final_state_arrays(skipped, step)[1].values())


# ------------------------------------------------------------- disk and permissions

def assert_one_line_error(result, expected):
  """Exit status 1, no traceback, stderr ending in one `error: <problem>; <fix>` line."""
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert lines and lines[-1].startswith("error: "), result.stderr[-3000:]
  assert sum(line.startswith("error: ") for line in lines) == 1
  assert expected in lines[-1], lines[-1]
  assert ";" in lines[-1]          # "<problem>; <fix>"


def test_unwritable_workdir_is_reported_before_training(raw_data, tfds_data_dir, tmp_path):
  # Tests run as root, for whom chmod does not block writes; a path below a file does.
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder\n")
  result = run(train_command(blocker / "workdir", raw_data, tfds_data_dir))
  assert_one_line_error(result, f"workdir {blocker / 'workdir'} is not writable (Not a directory)")
  assert blocker.read_text() == "not a folder\n"


@pytest.mark.parametrize("entry, is_folder", [("checkpoints", False), ("metrics.jsonl", True)])
def test_workdir_entry_of_the_wrong_kind_is_reported_before_training(
    entry, is_folder, raw_data, tfds_data_dir, tmp_path):
  workdir = tmp_path / "workdir"
  workdir.mkdir()
  (workdir / entry).mkdir() if is_folder else (workdir / entry).write_text("x")
  before = snapshot(workdir)
  result = run(train_command(workdir, raw_data, tfds_data_dir))
  assert_one_line_error(result, f"{workdir / entry} is not a")
  assert snapshot(workdir) == before


def test_full_disk_is_reported_at_the_failing_write_and_rerun_finishes(
    raw_data, tfds_data_dir, tmp_path, reference, cache):
  workdir = tmp_path / "workdir"
  command = train_command(workdir, raw_data, tfds_data_dir)
  # The disk fills while checkpoint 6 is finalised: 2 and 4 stay good.
  result = run(command, VAE_JAX_FAIL_AT="before rename */checkpoints/6.orbax-checkpoint-tmp", **cache)
  assert_one_line_error(result, "could not write the checkpoint of step 6")
  assert "No space left on device" in result.stderr and "resumes from step 4" in result.stderr
  assert checkpoint_steps(workdir) == [2, 4]
  kept = {step: snapshot(workdir / "checkpoints" / str(step)) for step in (2, 4)}
  # Then while metrics are made durable before the next checkpoint.
  result = run(command, VAE_JAX_FAIL_AT="before fsync */metrics.jsonl", **cache)
  assert_one_line_error(result, f"No space left on device: {workdir / 'metrics.jsonl'}; free disk")
  assert {step: snapshot(workdir / "checkpoints" / str(step)) for step in (2, 4)} == kept
  assert checkpoint_steps(workdir) == [2, 4]     # the unfinished tmp folder of 6 is no checkpoint
  # Space is freed: the same command finishes the run as if nothing happened.
  assert run(command, **cache).returncode == 0
  assert_same_run(workdir, reference)
  assert not (workdir / "corrupt_checkpoints").exists()


# ------------------------------------------------------------------------ sweeps

SWEEP_CONFIG = """
import sys
sys.path.insert(0, {tests!r})
from conftest import tiny_config
from vae_jax.scale import sweeps

def get_config(arg=""):
  return tiny_config({raw!r}, {tfds!r}, eval__num_examples=100, eval__is_num_samples=0)

def get_sweep(arg=""):
  return sweeps.sweep("seed", [0, 1])
"""


def test_killed_sweep_reruns_only_unfinished_points(raw_data, tfds_data_dir, tmp_path, cache):
  config = tmp_path / "sweep_config.py"
  config.write_text(SWEEP_CONFIG.format(tests=str(REPO / "tests"), raw=str(raw_data),
                                        tfds=str(tfds_data_dir)))
  workdir = tmp_path / "sweep"
  command = [sys.executable, "-m", "experiments.sweep", f"--config={config}", f"--workdir={workdir}"]
  # The machine goes down (the sweep and its training process, SIGKILL) while point
  # seed=1 has just finalised checkpoint 16 of 32; point seed=0 is finished.
  killed = run(command, VAE_JAX_KILL_AT="after rename */seed=1/checkpoints/16.orbax-checkpoint-tmp",
               VAE_JAX_KILL_GROUP="1", **cache)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  finished = snapshot(workdir / "seed=0")
  assert "results.json" in finished and not (workdir / "seed=1" / "results.json").exists()

  relaunched = run(command, **cache)
  assert relaunched.returncode == 0, relaunched.stderr[-2000:]
  assert "2 points, 1 finished, 1 to run" in relaunched.stdout
  assert snapshot(workdir / "seed=0") == finished               # not run again
  steps = [r["step"] for r in metrics_without_times(workdir / "seed=1") if r["split"] == "train"]
  assert steps == list(range(1, 33))                             # resumed at 16, once each
  assert (workdir / "seed=1" / "results.json").exists()


# --------------------------------------------------------------------- security

UNSAFE = re.compile(r"\bpickle\b|allow_pickle\s*=\s*True|\beval\(|\bexec\(|\bmarshal\b|"
                    r"\bshelve\b|yaml\.load\(|yaml\.unsafe_load|torch\.load|urlopen|"
                    r"requests\.get|dill\b|cloudpickle")


def test_the_code_never_unpickles_evaluates_or_fetches():
  offending = []
  for path in sorted(list((REPO / "vae_jax").rglob("*.py")) + list((REPO / "experiments").rglob("*.py"))):
    for number, line in enumerate(path.read_text().splitlines(), 1):
      code = line.split("#")[0]
      if UNSAFE.search(code) and '"""' not in code and "no pickle" not in line:
        offending.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
  assert not offending, offending


class _Payload:
  """Unpickling this creates the file `marker` (a stand-in for arbitrary code)."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, "w"))


def test_planted_pickles_are_never_executed(api_run, tmp_path, capsys):
  config, original = api_run
  marker = tmp_path / "pwned"
  payload = pickle.dumps(_Payload(str(marker)))
  workdir = tmp_path / "workdir"
  shutil.copytree(original, workdir)
  latest = workdir / "checkpoints" / "32"
  (latest / "meta" / "metadata").write_bytes(payload)
  for path in (latest / "state").rglob("*"):
    if path.is_file() and path.stat().st_size < 4096:   # every metadata file of the arrays
      path.write_bytes(payload)
  store = checkpoints_lib.CheckpointStore(str(workdir), 3)
  _, meta = store.restore_latest(initial_state(config))
  store.close()
  assert meta["step"] == 24 and "step 32 is corrupt" in capsys.readouterr().out
  # A data cache file holding a pickled object array.
  cache_file = tmp_path / "cache.npz"
  np.savez(cache_file, images=np.array([_Payload(str(marker))], dtype=object),
           labels=np.zeros(1))
  assert raw_data.read_cache(str(cache_file)) is None
  # A "compressed file" that is a pickle.
  model = build.build_model(config)
  with pytest.raises(ValueError, match="not a vae_jax compressed file"):
    compression.decompress(model, model.init(jax.random.PRNGKey(0)), payload)
  assert not marker.exists()
