"""Shared pytest setup: strict numerics and the raw-data location."""
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
