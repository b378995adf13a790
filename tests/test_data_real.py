"""Integration tests of vae_jax.datasets.data on the real raw files, offline.

The raw folder is $VAE_JAX_RAW_DATA_DIR or <repo>/../shared/data (the
`raw_data` fixture of conftest.py skips these tests when it is absent). TFDS
prepares each dataset once per session into conftest's `tfds_data_dir`
($TFDS_DATA_DIR or a session tmp dir; ~12 s per dataset on 2 cores). Any
attempt to open a network connection fails the test at once instead of hanging.
"""

import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from vae_jax.datasets import data
from vae_jax.datasets import raw_data as raw_lib


@pytest.fixture(scope="session", autouse=True)
def no_network():
  """Makes every internet connection attempt raise: the tests must not need the network."""
  original = socket.socket.connect

  def guarded(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6):
      raise OSError(f"test tried to reach the network: {address}")
    return original(sock, address)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(socket.socket, "connect", guarded)
    yield


@pytest.fixture(scope="session")
def data_dir(tfds_data_dir):
  """conftest's data_dir ($TFDS_DATA_DIR or a session tmp dir): prepared once, shared."""
  return str(tfds_data_dir)


@pytest.fixture(scope="session")
def load(data_dir, raw_data):
  def load_split(name, split):
    return data.load_split(name, split, data_dir=data_dir, raw_data_dir=raw_data)
  return load_split


@pytest.mark.parametrize("name,sizes", [
    ("mnist", (50_000, 10_000, 10_000)),
    ("fashion_mnist", (50_000, 10_000, 10_000)),
    ("binarized_mnist", (50_000, 10_000, 10_000)),
])
def test_split_sizes_values_labels(load, name, sizes):
  for split, size in zip(data.SPLITS, sizes):
    s = load(name, split)
    assert s.images.shape == (size, 784) and s.images.dtype == np.float32
    assert s.images.min() == 0 and s.images.max() == 1
    if name == "binarized_mnist":
      assert s.labels is None
      assert set(np.unique(s.images)) == {0.0, 1.0}
    else:
      assert s.labels.dtype == np.int32
      assert set(np.unique(s.labels)) == set(range(10))
      assert len(np.unique(s.images)) > 200  # intensities, not binary


def test_tfds_totals_and_validation_carve_out(load, data_dir):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  train, validation = load("mnist", "train"), load("mnist", "validation")
  builder = tfds.builder("mnist", data_dir=data_dir)
  assert builder.info.splits["train"].num_examples == 60_000
  assert builder.info.splits["test"].num_examples == 10_000
  images, labels = raw_lib.read_tfds_split(builder, "train")
  np.testing.assert_array_equal(labels[:50_000], train.labels)
  np.testing.assert_array_equal(labels[50_000:], validation.labels)
  np.testing.assert_array_equal(images[50_000:] / np.float32(255), validation.images)
  load("binarized_mnist", "test")  # prepared
  bin_builder = tfds.builder("binarized_mnist", data_dir=data_dir)
  assert [bin_builder.info.splits[s].num_examples for s in data.SPLITS] == [50_000, 10_000, 10_000]


def test_fashion_mnist_is_not_mnist(load):
  mnist, fashion = load("mnist", "train"), load("fashion_mnist", "train")
  # Known pixel means of the 50000 training images (60000: 0.1307 and 0.2860).
  assert abs(mnist.images.mean() - 0.1307) < 2e-3
  assert abs(fashion.images.mean() - 0.2860) < 2e-3
  assert abs(load("mnist", "test").images.mean() - load("fashion_mnist", "test").images.mean()) > 0.1


def test_dynamic_binarized_mnist_reads_mnist_intensities(load):
  for split in data.SPLITS:
    assert load("dynamic_binarized_mnist", split) is load("mnist", split)


def test_cache_then_no_tensorflow(load, data_dir):
  expected = load("fashion_mnist", "test").images.mean()
  cache = os.path.join(data_dir, raw_lib.CACHE_DIRNAME)
  assert {"fashion_mnist-train.npz", "fashion_mnist-validation.npz",
          "fashion_mnist-test.npz"} <= set(os.listdir(cache))
  code = (
      "import sys; from vae_jax.datasets import data; "
      f"s = data.load_split('fashion_mnist', 'test', data_dir={data_dir!r}, raw_data_dir='/nonexistent'); "
      "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; print(float(s.images.mean()))")
  out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                       timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert abs(float(out.stdout.split()[-1]) - expected) < 1e-6


def test_missing_raw_file_fails_within_seconds(raw_data, tmp_path):
  raw = tmp_path / "raw" / "mnist"
  raw.mkdir(parents=True)
  for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
    shutil.copy(raw_data / "mnist" / f, raw / f)
  start = time.monotonic()
  with pytest.raises(data.DataError) as err:
    data.load_split("mnist", "test", data_dir=tmp_path / "tfds", raw_data_dir=tmp_path / "raw")
  assert time.monotonic() - start < 10
  message = str(err.value)
  assert "\n" not in message
  assert "t10k-labels-idx1-ubyte.gz" in message and str(raw) in message
  assert "train-images-idx3-ubyte.gz missing" not in message


def test_truncated_raw_file_gives_checksum_error(raw_data, tmp_path):
  raw = tmp_path / "raw" / "fashion_mnist"
  shutil.copytree(raw_data / "fashion_mnist", raw)
  truncated = raw / "t10k-labels-idx1-ubyte.gz"
  truncated.write_bytes(truncated.read_bytes()[:1000])
  with pytest.raises(data.DataError, match="checksum") as err:
    data.load_split("fashion_mnist", "test", data_dir=tmp_path / "tfds",
                    raw_data_dir=tmp_path / "raw")
  assert "\n" not in str(err.value) and str(truncated) in str(err.value)
  # A failed preparation leaves none of the folders it created (issue 18, class 8).
  assert not (tmp_path / "tfds" / "fashion_mnist").exists()
  assert not (tmp_path / "tfds" / "downloads" / "fashion_mnist").exists()


# ----------------------------------- damaged cache and prepared data (issue 18, class 7)


@pytest.fixture
def private_mnist(load, data_dir, tmp_path):
  """A copy of the prepared MNIST (TFDS files only, no cache) in a data_dir of this test."""
  load("mnist", "test")  # prepared in the shared data_dir
  shutil.copytree(os.path.join(data_dir, "mnist"), tmp_path / "tfds" / "mnist")
  return tmp_path / "tfds"


def test_a_float_cache_is_rebuilt_from_the_prepared_data(load, private_mnist, raw_data):
  """Images in [0, 1] stored as floats would train on images / 255; the cache is rebuilt instead."""
  expected = load("mnist", "test")
  path = raw_lib.cache_path(str(private_mnist), "mnist", "test")
  raw_lib.write_cache(path, expected.images, expected.labels)   # float32 in [0, 1]
  with pytest.warns(UserWarning, match="images of dtype float32, expected uint8"):
    got = data.load_split("mnist", "test", data_dir=private_mnist, raw_data_dir=raw_data)
  np.testing.assert_array_equal(got.images, expected.images)
  np.testing.assert_array_equal(got.labels, expected.labels)
  images, labels = raw_lib.read_cache(path)
  assert images.dtype == np.uint8 and images.shape == (10_000, 784) and images.max() == 255


def _truncate_test_shard(folder):
  shard, = (folder / "mnist").glob("*/mnist-test.tfrecord-*")
  shard.write_bytes(shard.read_bytes()[:100_000])


def _garble_test_shard(folder):
  shard, = (folder / "mnist").glob("*/mnist-test.tfrecord-*")
  content = bytearray(shard.read_bytes())
  content[500_000:501_000] = b"x" * 1000
  shard.write_bytes(bytes(content))


def _remove_test_shard(folder):
  shard, = (folder / "mnist").glob("*/mnist-test.tfrecord-*")
  shard.unlink()


def _garble_dataset_info(folder):
  info, = (folder / "mnist").glob("*/dataset_info.json")
  info.write_text("garbage")


@pytest.mark.parametrize("damage", [_truncate_test_shard, _garble_test_shard, _remove_test_shard,
                                    _garble_dataset_info])
def test_damaged_prepared_data_is_one_line_naming_the_folder_to_delete(private_mnist, raw_data, damage):
  damage(private_mnist)
  with pytest.raises(data.DataError) as err:
    data.load_split("mnist", "test", data_dir=private_mnist, raw_data_dir=raw_data)
  message = str(err.value)
  assert "\n" not in message and len(message) < 400
  assert f"the prepared dataset under {private_mnist / 'mnist'} cannot be read" in message
  assert "delete that folder to prepare it again" in message
  if damage is _truncate_test_shard:   # The way out works: delete, load again.
    shutil.rmtree(private_mnist / "mnist")
    assert data.load_split("mnist", "test", data_dir=private_mnist, raw_data_dir=raw_data).images.shape == (
        10_000, 784)
