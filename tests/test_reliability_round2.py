"""Reliability, round two (issue 18): each class of failure tried with many members.

1. any workdir path works or is refused before training;
2. nothing non-finite is kept, checkpointed or reported;
3. every config value is range-checked before anything is written;
4. a rerun continues the same run, re-evaluates a finished one, or refuses;
5. one owner per workdir, and readers never touch a writer's files;
9. every exit path ends in one line (signals included).

Unit-level cases run in-process; command-line cases (subprocesses) only
where the command line is what is tested. The end-to-end path, kill and
signal cases that need the tiny reference run live in test_reliability.py.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, tiny_config
from test_reliability import assert_one_line_error, run, snapshot, train_command
from experiments import cli
from experiments import compress
from vae_jax import config as config_lib
from vae_jax.inference import evaluation
from vae_jax.models import vae as vae_lib
from vae_jax.run import checkpoints as checkpoints_lib
from vae_jax.run import optimizers
from vae_jax.run import train
from vae_jax.run import training
from vae_jax.run import workdir as workdir_lib
from vae_jax.scale import seeds


class Tiny(NamedTuple):
  """A small pytree with a step, as CheckpointStore expects."""
  step: Any
  w: Any
  b: Any


def tiny_state(step, scale=1.0):
  return Tiny(jnp.asarray(step, jnp.int32), jnp.full((3, 4), scale, jnp.float32),
              jnp.arange(4, dtype=jnp.float32) * scale)


def assert_same_tree(a, b):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ------------------------------------------------------------------ 1. paths

# Names a user can type; orbax globbed '[', '*', '?' and tensorstore read '\\'
# as a separator (writing outside the workdir) and 'gs:' as a scheme.
PATH_NAMES = ["run[1]", "a]b[", "st*r", "q?x", "sp ace", "ünïcødé", "per%cent", "p%20q",
              "hash#x", "back\\slash", "gs:", "x:y", "quo'te", 'dq"x', "a{b,c}", "semi;c",
              "amp&", "dol$HOME", "~", "-dash", "emoji😀", "a..b", "[seed=1]*?"]


@pytest.mark.parametrize("name", PATH_NAMES)
def test_checkpoints_round_trip_under_any_path(name, tmp_path):
  parent = tmp_path / "parent"
  workdir = parent / name / "run"
  with checkpoints_lib.CheckpointStore(str(workdir), keep=2) as store:
    for step in (2, 4, 6):
      store.save(tiny_state(step, scale=step))
  assert sorted(os.listdir(parent)) == [name.split("/")[0]]     # nothing written elsewhere
  assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "6"]
  for read_only in (False, True):
    with checkpoints_lib.CheckpointStore(str(workdir), read_only=read_only) as store:
      assert store.steps() == [4, 6]
      restored, meta = store.restore_latest(tiny_state(0))
      assert meta["step"] == 6
      assert_same_tree(restored, tiny_state(6, scale=6))
  assert not (workdir / "corrupt_checkpoints").exists()


@pytest.mark.parametrize("form", ["relative", "trailing_slash", "home", "symlink", "dot_dot"])
def test_workdir_path_forms_resolve_to_one_folder(form, tmp_path, monkeypatch):
  real = tmp_path / "home" / "runs" / "a b[1]"
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.chdir(tmp_path)
  given = {"relative": "home/runs/a b[1]", "trailing_slash": f"{real}/",
           "home": "~/runs/a b[1]", "dot_dot": f"{tmp_path}/home/x/../runs/a b[1]",
           "symlink": str(tmp_path / "link")}[form]
  real.mkdir(parents=True)
  if form == "symlink":
    (tmp_path / "link").symlink_to(real)
  path = workdir_lib.resolve(given)
  workdir_lib.prepare(path)
  with checkpoints_lib.CheckpointStore(path) as store:
    store.save(tiny_state(2))
  assert sorted(os.listdir(real / "checkpoints")) == ["2"]
  with checkpoints_lib.CheckpointStore(str(real), read_only=True) as store:
    assert_same_tree(store.restore_latest(tiny_state(0))[0], tiny_state(2))


@pytest.mark.parametrize("given, expected", [
    ("", "--workdir is empty"), ("   ", "--workdir is empty"),
    ("runs/a\nb", "control character"), ("runs/\tx", "control character"),
    ("runs/\x1b[31mred", "control character")])
def test_unusable_workdir_names_are_refused_in_one_line(given, expected):
  with pytest.raises(workdir_lib.WorkdirError, match=expected) as error:
    workdir_lib.resolve(given)
  assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["run[1]", "a*b", "c?d", "back\\slash", "gs:"])
def test_without_a_glob_safe_alias_odd_paths_are_refused_before_writing(name, tmp_path,
                                                                         monkeypatch):
  monkeypatch.setattr(checkpoints_lib, "_ALIAS_ROOT", str(tmp_path / "no_proc_fd"))
  with pytest.raises(checkpoints_lib.CheckpointError, match="choose a --workdir") as error:
    workdir_lib.prepare(str(tmp_path / name))
  assert "\n" not in str(error.value) and not (tmp_path / name).exists()
  workdir_lib.prepare(str(tmp_path / "plain name-1.2_ü"))    # plain names need no alias


def test_cli_empty_workdir_is_refused(raw_data, tfds_data_dir, tmp_path):
  result = run(train_command("", raw_data, tfds_data_dir))
  assert_one_line_error(result, "--workdir is empty")
  assert not (REPO / "checkpoints").exists() and not (REPO / "config.json").exists()


# ------------------------------------------------------- 2. non-finite results

def tiny_model():
  return vae_lib.VAE(hidden_widths=(16,), latent_dim=2)


def optimizer_config(**fields):
  opt = config_lib.default_config().optimizer
  for name, value in fields.items():
    opt[name] = value
  return opt


# Optimizers that turn a finite loss and gradient into non-finite parameters or
# optimizer state (validate refuses most of them; the step must not rely on it).
NON_FINITE_RESULTS = {
    "adam_b1_one": dict(name="adam", b1=1.0),                 # bias correction 1 - b1^t = 0
    "adam_eps_zero": dict(name="adam", eps=0.0),             # 0/0 where a gradient is 0
    "exponential_negative_decay": dict(schedule="exponential", decay_rate=-0.5),  # η_t = NaN
    "adam_learning_rate_inf": dict(name="adam", learning_rate=float("inf")),
    "sgd_learning_rate_inf": dict(name="sgd", learning_rate=float("inf")),
    "sgd_overflow": dict(name="sgd", learning_rate=3e38),    # θ − η∇ overflows float32
    "momentum_inf": dict(name="momentum", momentum=float("inf")),
    "adamw_weight_decay_inf": dict(name="adamw", weight_decay=float("inf")),
    "exponential_overflow": dict(name="sgd", schedule="exponential", learning_rate=1.0,
                                 decay_rate=1e38),
}


def batch_with_zero_pixels():
  """Random images whose first 100 pixels are 0 (their first-layer gradients are exactly 0)."""
  images = np.random.default_rng(0).uniform(size=(8, 784)).astype(np.float32)
  images[:, :100] = 0
  return jnp.asarray(images)


def first_steps(opt, check_results, num_steps=3):
  """[initial state, (state, measurements) after each step] of the tiny model under `opt`."""
  model = tiny_model()
  optimizer = optimizers.make_optimizer(optimizer_config(**opt), total_steps=2)
  step_fn = jax.jit(training.make_step_fn(model, optimizer, objective="elbo",
                                          check_results=check_results))
  state = training.init_state(model, optimizer, seed=0)
  history = [state]
  for _ in range(num_steps):
    state, measured = step_fn(state, batch_with_zero_pixels())
    history.append((state, measured))
  return history


@pytest.mark.parametrize("case", sorted(NON_FINITE_RESULTS))
def test_step_flags_non_finite_results_and_the_checked_step_drops_them(case):
  opt = NON_FINITE_RESULTS[case]
  # The fast step: the update is applied, but flagged (finite = 0) at the step it happens.
  fast = first_steps(opt, check_results=False)[1:]
  for state, measured in fast:
    if not bool(training.all_finite(state.params)):
      assert float(measured["finite"]) == 0
  assert 0.0 in [float(m["finite"]) for _, m in fast]
  # The checked step: a non-finite result is dropped; the state stays as it was.
  history = first_steps(opt, check_results=True)
  previous, dropped = history[0], 0
  for state, measured in history[1:]:
    if float(measured["finite"]) == 0:
      dropped += 1
      assert_same_tree((state.params, state.opt_state), (previous.params, previous.opt_state))
    assert bool(training.all_finite(state.params))
    if "learning_rate_inf" not in case:   # there η = inf is in the state from the start
      assert bool(training.all_finite(state))
    assert int(state.skipped) == dropped
    previous = state
  assert dropped


def test_fast_step_reports_finite_and_matches_the_checked_step_when_all_is_well():
  fast = first_steps({}, check_results=False)
  checked = first_steps({}, check_results=True)
  for (a, ma), (b, mb) in zip(fast[1:], checked[1:]):
    assert float(ma["finite"]) == 1 == float(mb["finite"])
    np.testing.assert_allclose(np.asarray(ma["param_norm"]), np.asarray(mb["param_norm"]), rtol=1e-6)
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
      np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_checked_step_drops_only_the_non_finite_member_under_vmap():
  model = tiny_model()
  optimizer = optimizers.make_optimizer(config_lib.default_config().optimizer, total_steps=4)
  step_fn = training.make_step_fn(model, optimizer, objective="elbo", check_results=True,
                                  member_axis=seeds.MEMBER_AXIS)
  states = [training.init_state(model, optimizer, seed=s) for s in (0, 1)]
  states[1].opt_state.hyperparams["learning_rate"] = jnp.asarray(np.inf, jnp.float32)
  stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *states)
  new, measured = jax.jit(jax.vmap(step_fn, in_axes=(0, None), axis_name=seeds.MEMBER_AXIS))(
      stacked, batch_with_zero_pixels())
  assert np.asarray(measured["finite"]).tolist() == [1.0, 0.0]
  member = lambda i: jax.tree_util.tree_map(lambda x: x[i], new.params)
  assert_same_tree(member(1), states[1].params)                 # dropped
  assert bool(training.all_finite(member(0)))
  assert not all(np.array_equal(a, b) for a, b in zip(            # updated
      jax.tree_util.tree_leaves(member(0)), jax.tree_util.tree_leaves(states[0].params)))


@pytest.mark.parametrize("leaf", ["w", "b"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_store_refuses_to_save_a_non_finite_state(leaf, bad, tmp_path):
  state = tiny_state(4)
  state = state._replace(**{leaf: getattr(state, leaf).at[1].set(bad)})
  with checkpoints_lib.CheckpointStore(str(tmp_path)) as store:
    store.save(tiny_state(2))
    before = snapshot(tmp_path)
    with pytest.raises(checkpoints_lib.CheckpointError, match=f"refusing to checkpoint step 4: state.{leaf}"):
      store.save(state)
    assert store.steps() == [2]
  assert snapshot(tmp_path) == before


def test_a_non_finite_checkpoint_of_an_older_version_is_set_aside_on_restore(tmp_path, monkeypatch):
  with checkpoints_lib.CheckpointStore(str(tmp_path)) as store:
    store.save(tiny_state(2))
    monkeypatch.setattr(checkpoints_lib, "first_non_finite", lambda arrays: None)
    store.save(tiny_state(4, scale=np.nan))            # as an older version would have
  monkeypatch.undo()
  with checkpoints_lib.CheckpointStore(str(tmp_path), read_only=True) as reader:
    assert reader.restore_latest(tiny_state(0))[1]["step"] == 2
  assert (tmp_path / "checkpoints" / "4").exists()    # a reader leaves it in place
  with checkpoints_lib.CheckpointStore(str(tmp_path)) as store:
    restored, meta = store.restore_latest(tiny_state(0))
  assert meta["step"] == 2 and [p.name[:2] for p in (tmp_path / "corrupt_checkpoints").iterdir()] == ["4-"]


@pytest.mark.parametrize("scores", [
    {"neg_elbo": float("nan")}, {"nll": float("inf")}, {"kl": -float("inf")},
    {"neg_elbo": 90.0, "nll_stderr": np.float32("nan")}])
def test_non_finite_scores_are_never_reported(scores):
  with pytest.raises(train.TrainingDiverged, match="NaN/inf") as error:
    train.check_finite_scores(scores, "the test evaluation")
  assert "\n" not in str(error.value)
  train.check_finite_scores({"neg_elbo": 90.0, "num_examples": 10}, "fine")


# (optimizer fields, the first step whose update is not finite, updates dropped under skip
# of the 16). Only the first is a valid config; the others bypass `validate` (monkeypatched).
DIVERGING = {
    "sgd_overflow": (dict(name="sgd", learning_rate=3e38), 1, 16),
    "adam_b1_one": (dict(name="adam", b1=1.0), 1, 16),
    "exponential_negative_decay": (dict(schedule="exponential", decay_rate=-0.5), 2, 15),
}


@pytest.fixture
def diverging_config(raw_data, tfds_data_dir, monkeypatch):
  """A tiny run of 16 steps, a checkpoint after every block, under one of DIVERGING."""
  def make(case, policy, steps_per_scan):
    if case != "sgd_overflow":
      monkeypatch.setattr(config_lib, "validate", lambda config: None)
    overrides = {f"optimizer__{k}": v for k, v in DIVERGING[case][0].items()}
    return tiny_config(raw_data, tfds_data_dir, training__nan_policy=policy,
                       training__num_epochs=1, training__steps_per_scan=steps_per_scan,
                       training__checkpoint_every_steps=1, eval__is_num_samples=0,
                       eval__num_examples=100, **overrides)
  return make


@pytest.mark.parametrize("case", sorted(DIVERGING))
def test_loop_stops_before_saving_a_non_finite_state(diverging_config, case, tmp_path):
  _, bad_step, _ = DIVERGING[case]
  good = bad_step - 1 or "none"
  with pytest.raises(train.TrainingDiverged, match=f"at step {bad_step}; the last good checkpoint is"
                     f" step {good}"):
    train.train_and_evaluate(diverging_config(case, "stop", 1), str(tmp_path))
  assert not (tmp_path / "results.json").exists()
  steps = sorted(int(p) for p in os.listdir(tmp_path / "checkpoints")) if (
      tmp_path / "checkpoints").exists() else []
  assert steps == list(range(1, bad_step))
  assert_finite_checkpoints(tmp_path, diverging_config(case, "stop", 1))


@pytest.mark.parametrize("case", sorted(DIVERGING))
def test_loop_skips_non_finite_results_and_reports_only_finite_ones(diverging_config, case,
                                                                    tmp_path):
  config = diverging_config(case, "skip", 4)
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results["skipped_updates"] == DIVERGING[case][2]
  assert all(np.isfinite(v) for v in results.values() if isinstance(v, float))
  assert_finite_checkpoints(tmp_path, config)


def assert_finite_checkpoints(workdir, config):
  if not (workdir / "checkpoints").exists():
    return
  with checkpoints_lib.CheckpointStore(str(workdir), read_only=True) as store:
    template = workdir_lib.state_template(config, tiny_config_model(config))
    for step in store.steps():
      state, _ = store.restore(step, template)
      assert bool(training.all_finite(state)), step


def test_a_non_finite_test_evaluation_is_never_written(finished, tmp_path, monkeypatch):
  config, workdir = copy_of(finished, tmp_path, eval__num_examples=200)   # re-evaluates
  real = evaluation.evaluate
  monkeypatch.setattr(evaluation, "evaluate",
                      lambda *a, **k: dict(real(*a, **k), neg_elbo=float("nan")))
  with pytest.raises(train.TrainingDiverged, match="the test evaluation gave neg_elbo=nan"):
    train.train_and_evaluate(config, str(workdir))
  assert not (workdir / "results.json").exists()
  assert not [r for r in map(json.loads, open(workdir / "metrics.jsonl")) if r["split"] == "test"]
  (aside,) = (workdir / "previous_results").iterdir()          # the earlier results are kept
  assert (aside / "results.json").read_bytes() == (finished[1] / "results.json").read_bytes()


def test_cli_evaluate_never_writes_non_finite_scores(finished, tmp_path):
  config, workdir = copy_of(finished, tmp_path)
  template = workdir_lib.state_template(config, tiny_config_model(config))
  with checkpoints_lib.CheckpointStore(str(workdir)) as store:
    state, _ = store.restore(16, template)
    huge = jax.tree_util.tree_map(lambda x: x * 1e30, state.params)   # finite, but overflows
    store.save(state._replace(step=jnp.asarray(17, jnp.int32), params=huge))
  before = snapshot(workdir)
  result = run([sys.executable, "-m", "experiments.evaluate", f"--workdir={workdir}",
                "--num_samples=5", "--num_examples=20", "--batch_size=20"])
  assert_one_line_error(result, "(NaN/inf), not written as a result")
  assert snapshot(workdir) == before


def tiny_config_model(config):
  from vae_jax.models import build  # pylint: disable=g-import-not-at-top
  return build.build_model(config)


# ----------------------------------------------------------- 3. config values

# (field, bad value, text the one-line error must hold besides "config.<field>=").
BAD_VALUES = [
    ("seed", -1, "[0, 2³²)"), ("seed", 2**32, "[0, 2³²)"),
    ("data.train_subset", -1, "≥ 0"), ("data.exclude_label", 10, "0–9"),
    ("data.exclude_label", -2, "0–9"),
    ("model.latent_dim", 0, "≥ 1"), ("model.hidden_widths", (0,), "whole numbers"),
    ("model.hidden_widths", (16, -1), "whole numbers"),
    ("model.hidden_widths", (16.5,), "whole numbers"),
    ("model.conv_channels", (32, 0), "whole numbers"),
    ("model.gaussian_scale", 0.0, "> 0"), ("model.gaussian_scale", float("nan"), "finite"),
    ("objective.num_samples", 0, "k must be ≥ 1"), ("objective.beta", -1.0, "β must be ≥ 0"),
    ("objective.beta", float("nan"), "finite"), ("objective.beta", float("inf"), "finite"),
    ("objective.kl_warmup_steps", -1, "≥ 0"),
    ("optimizer.learning_rate", 0.0, "> 0"), ("optimizer.learning_rate", -0.1, "> 0"),
    ("optimizer.learning_rate", float("inf"), "finite"),
    ("optimizer.learning_rate", float("nan"), "finite"),
    ("optimizer.warmup_steps", -1, "≥ 0"),
    ("optimizer.decay_rate", 0.0, "> 0"), ("optimizer.decay_rate", -0.5, "> 0"),
    ("optimizer.momentum", 1.0, "[0, 1)"), ("optimizer.momentum", -0.1, "[0, 1)"),
    ("optimizer.b1", 1.0, "[0, 1)"), ("optimizer.b1", -0.1, "[0, 1)"),
    ("optimizer.b1", float("nan"), "finite"), ("optimizer.b2", 1.0, "[0, 1)"),
    ("optimizer.b2", 1.5, "[0, 1)"),
    ("optimizer.eps", 0.0, "> 0"), ("optimizer.eps", -1e-8, "> 0"),
    ("optimizer.weight_decay", -1e-4, "≥ 0"), ("optimizer.weight_decay", float("inf"), "finite"),
    ("optimizer.grad_clip_norm", -1.0, "≥ 0"), ("optimizer.grad_clip_norm", float("nan"), "finite"),
    ("optimizer.grad_clip_norm", float("inf"), "finite"),
    ("training.batch_size", 0, "≥ 1"), ("training.num_epochs", -1, "≥ 1"),
    ("training.steps_per_scan", 0, "≥ 1"), ("training.log_every_steps", 0, "≥ 1"),
    ("training.checkpoint_every_steps", 0, "≥ 1"), ("training.keep_checkpoints", 0, "≥ 1"),
    ("training.keep_checkpoints_every_steps", -1, "≥ 0"), ("training.eval_every_epochs", 0, "≥ 1"),
    ("eval.batch_size", 0, "≥ 1"), ("eval.num_examples", -1, "≥ 0"),
    ("eval.is_num_samples", -1, "k must be ≥ 0"), ("eval.is_chunk_size", 0, "≥ 1"),
    ("optimizer.name", "adamm", "unknown optimizer"), ("training.nan_policy", "ignore", "unknown policy"),
]


@pytest.mark.parametrize("field, value, expected", BAD_VALUES,
                         ids=[f"{f}={v}" for f, v, _ in BAD_VALUES])
def test_validate_refuses_every_out_of_range_value(field, value, expected):
  config = config_lib.default_config()
  *path, leaf = field.split(".")
  node = config
  for name in path:
    node = node[name]
  node[leaf] = value
  with pytest.raises(ValueError) as error:
    config_lib.validate(config)
  message = str(error.value)
  assert message.startswith(f"config.{field}=") and expected in message, message
  assert "\n" not in message and "; " in message


def test_validate_accepts_the_defaults_and_every_shipped_config():
  import importlib  # pylint: disable=g-import-not-at-top
  config_lib.validate(config_lib.default_config())
  for path in sorted((REPO / "experiments" / "configs").glob("*.py")):
    module = importlib.import_module(f"experiments.configs.{path.stem}")
    if hasattr(module, "get_config"):
      config_lib.validate(module.get_config())


def test_a_new_float_field_is_checked_finite_without_a_line_of_its_own():
  config = config_lib.default_config()
  config.training.ema_decay = float("nan")         # as the lead's new fields will be
  with pytest.raises(ValueError, match=r"config.training.ema_decay=nan: must be finite"):
    config_lib.validate(config)


@pytest.mark.parametrize("argv, repeated", [
    (["--config.model.hidden_widths=(16,)", "--config.model.hidden_widths=(8,)"],
     "--config.model.hidden_widths"),
    (["--config.seed=1", "--config.seed=2"], "--config.seed"),
    (["--config.seed", "1", "--config.seed", "1"], "--config.seed"),
    (["--config=a.py", "--config=b.py"], "--config"),
    (["--workdir=a", "--workdir=b"], "--workdir"),
    (["--config.training.progress_bar=False", "--config.training.progress_bar"],
     "--config.training.progress_bar"),
])
def test_a_flag_given_twice_is_found(argv, repeated):
  message = cli._repeated_flag(["prog", *argv])  # pylint: disable=protected-access
  assert message and message.startswith(f"{repeated} is given twice")


@pytest.mark.parametrize("argv", [
    ["--config.seed=1", "--config.objective.beta=2"],
    ["--config.seed", "-1", "--config.objective.beta", "-1"],      # values, not flags
    ["--", "--config.seed=1", "--config.seed=2"],                  # after --: arguments
])
def test_distinct_flags_are_not_taken_for_repeats(argv):
  assert cli._repeated_flag(["prog", *argv]) is None  # pylint: disable=protected-access


@pytest.mark.parametrize("num_images", [-1, -9999])
def test_compress_refuses_a_negative_number_of_images(num_images, tmp_path):
  with pytest.raises(ValueError, match=f"--num_images={num_images} must be ≥ 0"):
    compress.encode(str(tmp_path / "no_run"), str(tmp_path / "out.vaez"), split="test",
                    num_images=num_images)
  assert not (tmp_path / "out.vaez").exists()


# ------------------------------------------------------------------- 4. reruns

@pytest.fixture(scope="module")
def finished(raw_data, tfds_data_dir, tmp_path_factory):
  """A finished tiny run: 1 epoch (16 steps), checkpoints 8 and 16."""
  config = tiny_config(raw_data, tfds_data_dir, training__num_epochs=1, eval__is_num_samples=0,
                       eval__num_examples=100)
  workdir = tmp_path_factory.mktemp("finished")
  train.train_and_evaluate(config, str(workdir))
  return config, workdir


def copy_of(finished, tmp_path, **overrides):
  config, original = finished
  workdir = tmp_path / "workdir"
  shutil.copytree(original, workdir)
  config = config.copy_and_resolve_references()
  for dotted, value in overrides.items():
    *path, leaf = dotted.split("__")
    node = config
    for name in path:
      node = node[name]
    node[leaf] = value
  return config, workdir


@pytest.mark.parametrize("overrides", [
    {}, {"training__progress_bar": True}, {"training__tensorboard": True},
    {"training__keep_checkpoints": 1}, {"training__log_every_steps": 5},
    {"training__checkpoint_every_steps": 3}, {"training__eval_every_epochs": 2},
    {"training__nan_policy": "skip"}, {"eval__write_images": True},
    {"data__raw_data_dir": "elsewhere/raw"}])
def test_rerun_of_a_finished_run_changing_nothing_that_matters_does_nothing(
    finished, overrides, tmp_path):
  config, workdir = copy_of(finished, tmp_path, **overrides)
  if "data__raw_data_dir" in overrides:
    config.data.raw_data_dir = finished[0].data.raw_data_dir   # the same files, moved
    previous = json.load(open(workdir / "config.json"))
    previous["data"]["raw_data_dir"] = "elsewhere/raw"
    json.dump(previous, open(workdir / "config.json", "w"))
  before = snapshot(workdir)
  results = train.train_and_evaluate(config, str(workdir))
  assert results == json.load(open(workdir / "results.json"))
  assert snapshot(workdir) == before                            # config.json untouched too


@pytest.mark.parametrize("field, value", [
    ("eval__num_examples", 200), ("eval__is_num_samples", 5), ("eval__batch_size", 50)])
def test_finished_run_rerun_with_other_eval_settings_is_re_evaluated_and_says_so(
    finished, field, value, tmp_path, capsys):
  config, workdir = copy_of(finished, tmp_path, **{field: value})
  old_results, old_config = (workdir / "results.json").read_text(), (workdir / "config.json").read_text()
  checkpoints = snapshot(workdir / "checkpoints")
  results = train.train_and_evaluate(config, str(workdir))
  assert "re-evaluating the finished run" in capsys.readouterr().out
  assert json.load(open(workdir / "results.json")) == results
  assert json.load(open(workdir / "config.json")) == json.loads(config.to_json_best_effort())
  assert results["num_test_examples"] == config.eval.num_examples
  assert ("nll" in results) == (config.eval.is_num_samples > 0)
  assert snapshot(workdir / "checkpoints") == checkpoints        # no training
  (aside,) = (workdir / "previous_results").iterdir()
  assert (aside / "results.json").read_text() == old_results
  assert (aside / "config.json").read_text() == old_config
  tests = [r for r in map(json.loads, open(workdir / "metrics.jsonl")) if r["split"] == "test"]
  assert len(tests) == 1 and tests[0]["num_test_examples"] == config.eval.num_examples
  assert train.train_and_evaluate(config, str(workdir)) == results   # now done


@pytest.mark.parametrize("schedule", ["cosine", "exponential", "warmup_cosine"])
@pytest.mark.parametrize("epochs", [2, 3])
def test_more_epochs_under_a_schedule_of_the_total_steps_is_refused(schedule, epochs):
  config = config_lib.default_config()
  config.optimizer.schedule = schedule
  previous = json.loads(config.to_json_best_effort())
  config.training.num_epochs = previous["training"]["num_epochs"] * epochs
  for step in (0, 100, 200):
    with pytest.raises(workdir_lib.WorkdirError, match=f"{schedule} learning-rate schedule depends"
                       " on the total number of steps.*use a new --workdir"):
      workdir_lib.rerun_plan(previous, config, step=step, skipped=0, total_steps=10**6,
                             steps_per_epoch=100, workdir="w")
  config.optimizer.schedule = previous["optimizer"]["schedule"] = "constant"
  assert workdir_lib.rerun_plan(previous, config, step=200, skipped=0, total_steps=10**6,
                                steps_per_epoch=100, workdir="w") == "train"


def test_a_finished_cosine_run_given_more_epochs_is_refused(raw_data, tfds_data_dir, tmp_path):
  config = tiny_config(raw_data, tfds_data_dir, training__num_epochs=1, eval__is_num_samples=0,
                       eval__num_examples=100, optimizer__schedule="cosine")
  train.train_and_evaluate(config, str(tmp_path))
  config.training.num_epochs = 2
  before = snapshot(tmp_path)
  with pytest.raises(train.WorkdirError, match="cosine learning-rate schedule depends"):
    train.train_and_evaluate(config, str(tmp_path))
  assert snapshot(tmp_path) == before


def test_more_epochs_under_a_constant_schedule_trains_on_keeping_the_old_results(
    finished, tmp_path, capsys):
  config, workdir = copy_of(finished, tmp_path, training__num_epochs=2)
  old_results = (workdir / "results.json").read_text()
  results = train.train_and_evaluate(config, str(workdir))
  assert "training on" in capsys.readouterr().out
  assert results["step"] == 32 and results["epochs"] == 2
  assert json.load(open(workdir / "config.json"))["training"]["num_epochs"] == 2
  (aside,) = (workdir / "previous_results").iterdir()
  assert (aside / "results.json").read_text() == old_results


def test_an_unfinished_run_cannot_change_its_eval_settings(finished, tmp_path):
  config, workdir = copy_of(finished, tmp_path, eval__num_examples=200)
  shutil.rmtree(workdir / "checkpoints" / "16")    # mid-way: the newest checkpoint is step 8
  (workdir / "results.json").unlink()
  before = snapshot(workdir)
  with pytest.raises(train.WorkdirError, match="unfinished run evaluated with eval.num_examples=100"):
    train.train_and_evaluate(config, str(workdir))
  assert snapshot(workdir) == before


def test_fewer_epochs_than_already_trained_is_refused(finished, tmp_path):
  config, workdir = copy_of(finished, tmp_path, training__num_epochs=2)
  train.train_and_evaluate(config, str(workdir))
  config.training.num_epochs = 1
  before = snapshot(workdir)
  with pytest.raises(train.WorkdirError, match=r"already trained for 2 epochs \(step 32\)"):
    train.train_and_evaluate(config, str(workdir))
  assert snapshot(workdir) == before


@pytest.mark.parametrize("field, value", [
    ("model__latent_dim", 3), ("seed", 1), ("optimizer__b1", 0.8), ("optimizer__schedule", "cosine"),
    ("training__steps_per_scan", 2), ("training__batch_size", 16), ("objective__beta", 0.5),
    ("data__train_subset", 256), ("objective__kl_warmup_steps", 4)])
def test_a_field_that_defines_the_run_cannot_change(finished, field, value, tmp_path):
  config, workdir = copy_of(finished, tmp_path, **{field: value})
  before = snapshot(workdir)
  with pytest.raises(train.WorkdirError, match=f"holds a run with a different {field.replace('__', '.')}"):
    train.train_and_evaluate(config, str(workdir))
  assert snapshot(workdir) == before


def test_nan_policy_cannot_change_once_an_update_was_skipped():
  previous = json.loads(config_lib.default_config().to_json_best_effort())
  previous["training"]["nan_policy"] = "skip"
  config = config_lib.default_config()
  plan = dict(step=10, total_steps=20, steps_per_epoch=10, workdir="w")
  with pytest.raises(workdir_lib.WorkdirError, match="skipped 3 non-finite updates"):
    workdir_lib.rerun_plan(previous, config, skipped=3, **plan)
  assert workdir_lib.rerun_plan(previous, config, skipped=0, **plan) == "train"


# --------------------------------------------------------------- 5. one owner

def test_a_second_owner_is_refused_naming_the_holder(tmp_path):
  with workdir_lib.owned(str(tmp_path)):
    with pytest.raises(workdir_lib.WorkdirError, match=f"in use by another training process"
                       f" \\(pid {os.getpid()} on "):
      with workdir_lib.owned(str(tmp_path)):
        pass
  with workdir_lib.owned(str(tmp_path)):     # released when its owner is done
    pass


HOLD = """
import sys, time
sys.path.insert(0, {repo!r})
from vae_jax.run import workdir
with workdir.owned({workdir!r}):
  print("held", flush=True)
  time.sleep(600)
"""


def test_a_training_on_a_workdir_owned_by_another_process_changes_nothing(finished, tmp_path):
  config, workdir = copy_of(finished, tmp_path, eval__num_examples=200)   # would re-evaluate
  holder = subprocess.Popen([sys.executable, "-c", HOLD.format(repo=str(REPO), workdir=str(workdir))],
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    before = snapshot(workdir)
    with pytest.raises(train.WorkdirError, match=f"pid {holder.pid} on "):
      train.train_and_evaluate(config, str(workdir))
    assert snapshot(workdir) == before
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  train.train_and_evaluate(config, str(workdir))   # a killed owner leaves no lock behind


def test_cli_second_writer_gets_one_line_naming_the_holder(finished, raw_data, tfds_data_dir,
                                                          tmp_path):
  _, workdir = copy_of(finished, tmp_path)
  holder = subprocess.Popen([sys.executable, "-c", HOLD.format(repo=str(REPO), workdir=str(workdir))],
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    before = snapshot(workdir)
    result = run(train_command(workdir, raw_data, tfds_data_dir))
    assert_one_line_error(result, f"is in use by another training process (pid {holder.pid} on ")
    assert snapshot(workdir) == before
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()


def test_readers_leave_a_writers_files_alone(finished, tmp_path):
  _, workdir = copy_of(finished, tmp_path)
  checkpoints = workdir / "checkpoints"
  in_progress = checkpoints / "24.orbax-checkpoint-tmp"        # a checkpoint being written
  shutil.copytree(checkpoints / "16", in_progress)
  newest = checkpoints / "32"                                   # one being written or deleted
  shutil.copytree(checkpoints / "16", newest)
  (newest / "meta" / "metadata").write_text('{"step": 32, "dig')
  before = snapshot(workdir)
  config, _, params = workdir_lib.load_trained(str(workdir))
  assert snapshot(workdir) == before                            # nothing deleted, moved or made
  with checkpoints_lib.CheckpointStore(str(workdir), read_only=True) as store:
    expected, _ = store.restore(16, workdir_lib.state_template(config, tiny_config_model(config)))
  assert_same_tree(params, expected.params)


# ---------------------------------------------------------------- 9. exits

def test_the_checkpoint_store_is_closed_on_every_error(diverging_config, tmp_path, monkeypatch):
  closed = []
  original = checkpoints_lib.CheckpointStore.close
  monkeypatch.setattr(checkpoints_lib.CheckpointStore, "close",
                      lambda self: closed.append(self) or original(self))
  with pytest.raises(train.TrainingDiverged):
    train.train_and_evaluate(diverging_config("sgd_overflow", "stop", 4), str(tmp_path))
  assert len(closed) == 1


def test_a_signal_during_a_checkpoint_write_waits_for_it(tmp_path):
  """SIGINT while orbax writes: the checkpoint is finished, then KeyboardInterrupt."""
  store = checkpoints_lib.CheckpointStore(str(tmp_path))
  original = store._manager.save   # pylint: disable=protected-access

  def save_then_interrupted(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)                  # the handler would run here, inside orbax
    return original(*args, **kwargs)

  store._manager.save = save_then_interrupted   # pylint: disable=protected-access
  with pytest.raises(KeyboardInterrupt):
    store.save(tiny_state(2))
  store.close()
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
  with checkpoints_lib.CheckpointStore(str(tmp_path), read_only=True) as reader:
    assert_same_tree(reader.restore_latest(tiny_state(0))[0], tiny_state(2))
