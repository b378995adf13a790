"""Bad inputs are rejected with one line naming the problem and the fix (issue 10).

Through the command line: exit status 1, stderr ending in exactly one
`error: ...` line (no traceback), and the workdir exactly as it was (every
file's SHA-256 compared). Through the API: a ValueError (DataError and the
compression FormatError are ValueErrors) whose message is one line.
"""
import pathlib
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from test_reliability import assert_one_line_error, run, snapshot, train_command
from vae_jax.nn import activations
from vae_jax.nn import autoencoders
from vae_jax.applications import compression
from vae_jax.datasets import data
from vae_jax.inference import evaluation
from vae_jax.run import train
from vae_jax.models import vae as vae_lib

CONFIG = "--config=experiments/configs/default.py"

# (flags added to the tiny CLI run, text the error line must contain).
CLI_CASES = {
    "typo_in_field": (["--config.model.latent_dm=2"], "unknown config field 'latent_dm'"),
    "typo_in_section": (["--config.modle.latent_dim=2"], "did you mean 'model'"),
    "unknown_field": (["--config.model.depth=3"], "unknown config field 'depth'"),
    "string_for_int": (["--config.model.latent_dim=two"], "--config.model.latent_dim=two"),
    "float_for_int": (["--config.training.batch_size=3.5"], "--config.training.batch_size=3.5"),
    "string_for_float": (["--config.objective.beta=high"], "--config.objective.beta=high"),
    "widths_increase": (["--config.model.hidden_widths=(8,16)"], "Lemma 2.1.1"),
    "latent_wider_than_hidden": (["--config.model.latent_dim=32"], "Lemma 2.1.1"),
    "latent_dim_zero": (["--config.model.latent_dim=0"], "model.latent_dim=0"),
    "latent_dim_negative": (["--config.model.latent_dim=-3"], "model.latent_dim=-3"),
    "unknown_activation": (["--config.model.activation=relux"], "relux"),
    "unknown_dataset": (["--config.data.name=cifar10"], "unknown dataset"),
    "unknown_likelihood": (["--config.model.likelihood=poisson"], "poisson"),
    "unknown_architecture": (["--config.model.architecture=transformer"], "transformer"),
    "unknown_objective": (["--config.objective.name=vae"], "unknown objective"),
    "unknown_optimizer": (["--config.optimizer.name=adamm"], "unknown optimizer"),
    "unknown_schedule": (["--config.optimizer.schedule=linear"], "unknown schedule"),
    "negative_learning_rate": (["--config.optimizer.learning_rate=-0.1"], "learning_rate"),
    "negative_beta": (["--config.objective.beta=-1.0"], "β must be ≥ 0"),
    "iwae_k_zero": (["--config.objective.name=iwae", "--config.objective.num_samples=0"],
                    "k must be ≥ 1"),
    "batch_larger_than_split": (["--config.training.batch_size=1000"], "batch_size=1000"),
    "zero_epochs": (["--config.training.num_epochs=0"], "training.num_epochs=0"),
    "zero_steps_per_scan": (["--config.training.steps_per_scan=0"], "training.steps_per_scan=0"),
    "unknown_nan_policy": (["--config.training.nan_policy=ignore"], "unknown policy"),
    "negative_train_subset": (["--config.data.train_subset=-5"], "data.train_subset=-5"),
    "zero_eval_batch": (["--config.eval.batch_size=0"], "eval.batch_size=0"),
    "beta_nan": (["--config.objective.beta=nan"], "config.objective.beta=nan: must be finite"),
    "seed_negative": (["--config.seed=-1"], "config.seed=-1"),
    "grad_clip_nan": (["--config.optimizer.grad_clip_norm=nan"], "config.optimizer.grad_clip_norm=nan"),
    "learning_rate_inf": (["--config.optimizer.learning_rate=inf"], "config.optimizer.learning_rate=inf"),
    "adam_b1_one": (["--config.optimizer.b1=1.0"], "config.optimizer.b1=1.0: must be in [0, 1)"),
    "negative_decay_rate": (["--config.optimizer.schedule=exponential",
                             "--config.optimizer.decay_rate=-0.5"], "config.optimizer.decay_rate=-0.5"),
    "negative_eval_examples": (["--config.eval.num_examples=-1"], "config.eval.num_examples=-1"),
    "tuple_flag_twice": (["--config.model.hidden_widths=(16,)", "--config.model.hidden_widths=(8,)"],
                         "--config.model.hidden_widths is given twice"),
    "scalar_flag_twice": (["--config.seed=1", "--config.seed=2"], "--config.seed is given twice"),
    "unknown_flag": (["--learning_rate=0.1"], "Unknown command line flag 'learning_rate'"),
    "positional_argument": (["extra"], "unexpected arguments 'extra'"),
}


@pytest.fixture
def workdir(tmp_path):
  """An existing workdir with a file in it, which a rejected run must leave alone."""
  directory = tmp_path / "workdir"
  directory.mkdir()
  (directory / "notes.txt").write_text("keep me\n")
  return directory


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_rejects_bad_config(case, workdir, raw_data, tfds_data_dir):
  flags, expected = CLI_CASES[case]
  before = snapshot(workdir)
  result = run(train_command(workdir, raw_data, tfds_data_dir, *flags))
  assert_one_line_error(result, expected)
  assert snapshot(workdir) == before


@pytest.mark.parametrize("config, expected", [
    ("experiments/configs/no_such_config.py", "No such file or directory"),
    ("https://example.com/config.py", "cannot load --config"),   # never fetched
    ("experiments/configs/default.py:bogus", "unknown config argument 'bogus'"),
])
def test_cli_rejects_bad_config_file(config, expected, workdir):
  before = snapshot(workdir)
  result = run([sys.executable, "-m", "experiments.train", f"--config={config}",
                f"--workdir={workdir}"])
  assert_one_line_error(result, expected)
  assert snapshot(workdir) == before


def test_cli_requires_workdir():
  result = run([sys.executable, "-m", "experiments.train", CONFIG])
  assert_one_line_error(result, "--workdir")


def test_cli_batch_not_divisible_by_devices(workdir, raw_data, tfds_data_dir):
  before = snapshot(workdir)
  result = run(train_command(workdir, raw_data, tfds_data_dir, "--config.training.batch_size=33"),
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
  assert_one_line_error(result, "does not split evenly over the 2 devices")
  assert snapshot(workdir) == before


def test_cli_missing_raw_data(workdir, raw_data, tmp_path):
  empty = tmp_path / "raw"
  empty.mkdir()
  before = snapshot(workdir)
  result = run(train_command(workdir, empty, tmp_path / "fresh_tfds"))
  assert_one_line_error(result, "train-images-idx3-ubyte.gz")
  assert snapshot(workdir) == before


def test_cli_corrupted_raw_data(workdir, raw_data, tmp_path):
  corrupt = tmp_path / "raw" / "mnist"
  shutil.copytree(pathlib.Path(raw_data) / "mnist", corrupt)
  damaged = corrupt / "t10k-images-idx3-ubyte.gz"
  damaged.write_bytes(damaged.read_bytes()[:1000])
  before = snapshot(workdir)
  result = run(train_command(workdir, corrupt.parent, tmp_path / "fresh_tfds"))
  assert_one_line_error(result, "t10k-images-idx3-ubyte.gz does not match the checksum")
  assert snapshot(workdir) == before


@pytest.fixture(scope="module")
def trained_workdir(raw_data, tfds_data_dir, tmp_path_factory):
  """A finished tiny run (784-32-4, its own flags: not the CLI's tiny 784-16-2)."""
  directory = tmp_path_factory.mktemp("trained")
  train.train_and_evaluate(tiny_config(raw_data, tfds_data_dir, training__num_epochs=1,
                                       eval__is_num_samples=0), str(directory))
  return directory


def test_cli_rejects_workdir_of_another_run(trained_workdir, raw_data, tfds_data_dir):
  before = snapshot(trained_workdir)
  result = run(train_command(trained_workdir, raw_data, tfds_data_dir))
  assert_one_line_error(result, "holds a run with a different")
  assert snapshot(trained_workdir) == before


def test_cli_rejects_checkpoint_of_another_architecture(trained_workdir, raw_data, tfds_data_dir,
                                                        tmp_path):
  workdir = tmp_path / "no_config"
  shutil.copytree(trained_workdir, workdir)
  (workdir / "config.json").unlink()             # only the checkpoints tell the model
  (workdir / "results.json").unlink()
  before = snapshot(workdir)
  result = run(train_command(workdir, raw_data, tfds_data_dir))
  assert_one_line_error(result, "was written by a different model")
  assert snapshot(workdir) == before
  assert not (workdir / "corrupt_checkpoints").exists()   # not mistaken for corruption


# ---------------------------------------------------------------- the API

@pytest.fixture(scope="module")
def model_and_params():
  model = vae_lib.VAE(hidden_widths=(16,), latent_dim=2)
  return model, model.init(jax.random.PRNGKey(0))


def images(n=6):
  return np.random.default_rng(0).uniform(size=(n, 784)).astype(np.float32)


def with_nan():
  x = images()
  x[2, 100] = np.nan
  return x


API_CASES = {
    "evaluate_unflattened_images": (
        lambda m, p: evaluation.evaluate(m, p, images().reshape(6, 28, 28), jax.random.PRNGKey(0)),
        "got shape (6, 28, 28)"),
    "evaluate_nan_images": (
        lambda m, p: evaluation.evaluate(m, p, with_nan(), jax.random.PRNGKey(0)), "NaN"),
    "evaluate_uint8_range_images": (
        lambda m, p: evaluation.evaluate(m, p, images() * 255, jax.random.PRNGKey(0)), "[0, 1]"),
    "evaluate_k_zero": (
        lambda m, p: evaluation.evaluate(m, p, images(), jax.random.PRNGKey(0), num_samples=0),
        "num_samples"),
    "compress_nan_images": (lambda m, p: compression.compress(m, p, with_nan()), "NaN"),
    "check_images_wrong_width": (lambda m, p: data.check_images(np.zeros((3, 783))), "783"),
    "constant_activation_in_model": (
        lambda m, p: vae_lib.VAE(hidden_widths=(16,), latent_dim=2,
                                 activation=lambda x: jnp.ones_like(x)), "Def. 1.1.1"),
    "register_constant_activation": (
        lambda m, p: activations.register("zero_everywhere", jnp.zeros_like), "Def. 1.1.1"),
    "encoder_widths_increase": (
        lambda m, p: autoencoders.check_encoder_widths((784, 16, 32)), "Lemma 2.1.1"),
    "decoder_widths_decrease": (
        lambda m, p: autoencoders.check_decoder_widths((32, 16, 784)), "Lemma 2.1.2"),
    "latent_dim_zero": (lambda m, p: vae_lib.VAE(latent_dim=0), "latent_dim"),
    "unknown_dataset": (lambda m, p: data.load_split("cifar10", "train"), "unknown dataset"),
    "compressed_file_of_another_model": (
        lambda m, p: compression.decompress(
            m, m.init(jax.random.PRNGKey(1)), compression.compress(m, p, images())),
        "not by this model"),
    "truncated_compressed_file": (
        lambda m, p: compression.decompress(m, p, compression.compress(m, p, images())[:-2]),
        "truncated"),
    "foreign_compressed_file": (
        lambda m, p: compression.decompress(m, p, b"\x89PNG\r\n\x1a\n" + bytes(64)),
        "not a vae_jax compressed file"),
}


@pytest.mark.parametrize("case", sorted(API_CASES))
def test_api_rejects_bad_input(case, model_and_params):
  call, expected = API_CASES[case]
  with pytest.raises(ValueError) as error:
    call(*model_and_params)
  message = str(error.value)
  assert expected in message and "\n" not in message.strip(), message
