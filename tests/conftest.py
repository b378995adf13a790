"""Shared pytest setup: strict numerics and the raw-data location."""
import gc
import os
import pathlib

import jax
import pytest

# Make silent rank promotion an error (a classic source of broadcasting bugs).
jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = pathlib.Path(__file__).resolve().parents[1]


def raw_data_dir() -> pathlib.Path:
  """The folder of raw dataset files: $VAE_JAX_RAW_DATA_DIR or ../shared/data."""
  return pathlib.Path(os.environ.get("VAE_JAX_RAW_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def raw_data():
  path = raw_data_dir()
  if not (path / "mnist").is_dir():
    pytest.skip(f"raw data not found at {path}; set VAE_JAX_RAW_DATA_DIR")
  return path


@pytest.fixture(scope="session")
def tfds_data_dir(tmp_path_factory):
  """Where TFDS prepares datasets: $TFDS_DATA_DIR (shared, CI) or a session tmp dir."""
  return os.environ.get("TFDS_DATA_DIR") or str(tmp_path_factory.mktemp("tfds"))


def tiny_config(raw_data, tfds_data_dir, **overrides):
  """A tiny MNIST VAE that trains in seconds: 784-32-4 on 512 images."""
  from vae_jax import config as config_lib
  config = config_lib.default_config()
  config.data.raw_data_dir = str(raw_data)
  config.data.data_dir = str(tfds_data_dir)
  config.data.train_subset = 512
  config.model.hidden_widths = (32,)
  config.model.latent_dim = 4
  config.training.batch_size = 32
  config.training.num_epochs = 2
  config.training.steps_per_scan = 4
  config.training.log_every_steps = 1
  config.training.checkpoint_every_steps = 8
  config.training.progress_bar = False
  config.training.tensorboard = False
  config.eval.batch_size = 100
  config.eval.num_examples = 200
  config.eval.is_num_samples = 50
  config.eval.is_chunk_size = 25
  config.eval.write_images = False
  config.eval.write_figures = False
  for dotted, value in overrides.items():
    node = config
    *path, leaf = dotted.split("__")
    for name in path:
      node = node[name]
    node[leaf] = value
  return config


def pytest_sessionfinish(session):
  """Drops JAX's and hypothesis's gc callbacks once every test has run.

  pytest-xdist stops a worker that takes over 5 s to finish (a loaded machine)
  with SIGINT; a KeyboardInterrupt that lands inside a gc callback cannot
  propagate and was printed as an "Exception ignored in _xla_gc_callback"
  traceback after the results. After the last test neither callback has work.
  """
  del session
  gc.callbacks.clear()
