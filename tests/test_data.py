"""Unit tests of vae_jax.datasets.data on tfds.testing.mock_data: no files, no network."""

import os
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from vae_jax.datasets import data
from vae_jax.datasets import raw_data

NUM_MOCK = 120  # mock TFDS train: 100 train + 20 validation (the last N // 6).


@pytest.fixture(autouse=True)
def _no_raw_dir_env(monkeypatch):
  monkeypatch.delenv(data.RAW_DATA_ENV, raising=False)


def _mock_load(name, split, data_dir, **kwargs):
  max_value = 2 if name == "binarized_mnist" else None
  with tfds.testing.mock_data(num_examples=NUM_MOCK, max_value=max_value):
    return data.load_split(name, split, data_dir=str(data_dir), **kwargs)


# ---------------------------------------------------------------- dataset_info


@pytest.mark.parametrize("name", data.DATASETS)
def test_dataset_info(name):
  info = data.dataset_info(name)
  assert info.name == name and info.image_shape == (28, 28, 1)
  assert info.binary == (name == "binarized_mnist")
  assert info.num_classes == (None if name == "binarized_mnist" else 10)
  assert info.dynamic_binarization == (name == "dynamic_binarized_mnist")


def test_unknown_dataset_lists_valid_names():
  with pytest.raises(data.DataError, match="mnist, fashion_mnist, binarized_mnist"):
    data.dataset_info("cifar10")


def test_unknown_split(tmp_path):
  with pytest.raises(data.DataError, match="train, validation, test"):
    data.load_split("mnist", "valid", data_dir=tmp_path)


# ------------------------------------------------------------------ load_split


@pytest.mark.parametrize("name", data.DATASETS)
@pytest.mark.parametrize("split,size", [("train", 100), ("validation", 20), ("test", 120)])
def test_mock_split_shapes_dtypes_ranges(tmp_path, name, split, size):
  s = _mock_load(name, split, tmp_path)
  if name == "binarized_mnist":  # Its own TFDS splits, all of mock size.
    size = NUM_MOCK
  assert s.images.shape == (size, 784) and s.images.dtype == np.float32
  assert s.images.min() >= 0 and s.images.max() <= 1
  if name == "binarized_mnist":
    assert s.labels is None
    assert set(np.unique(s.images)) <= {0.0, 1.0}
  else:
    assert s.labels.shape == (size,) and s.labels.dtype == np.int32
    assert s.labels.min() >= 0 and s.labels.max() <= 9
    # Intensities, not binary: uint8 / 255 gives many levels.
    assert len(np.unique(s.images)) > 10
  assert not s.images.flags.writeable


def test_mock_validation_is_tail_of_train(tmp_path):
  train = _mock_load("mnist", "train", tmp_path)
  validation = _mock_load("mnist", "validation", tmp_path)
  # Mock examples are a deterministic stream; the mock test split is the same stream.
  full = _mock_load("mnist", "test", tmp_path)
  np.testing.assert_array_equal(np.concatenate([train.images, validation.images]), full.images)


def test_mock_skips_raw_check_and_cache(tmp_path, monkeypatch):
  monkeypatch.setenv(data.RAW_DATA_ENV, str(tmp_path / "does_not_exist"))
  s = _mock_load("mnist", "train", tmp_path / "tfds")
  assert len(s) == 100
  assert not (tmp_path / "tfds" / raw_data.CACHE_DIRNAME).exists()


def test_binarized_mock_needs_binary_pixels(tmp_path):
  with tfds.testing.mock_data(num_examples=10):  # max_value 255: not binary.
    with pytest.raises(data.DataError, match="max_value=2"):
      data.load_split("binarized_mnist", "train", data_dir=tmp_path)


# ------------------------------------------------- npz cache and raw-file check


def _fake_split(split, seed=0):
  """Arrays of a real split's size and type (the cache is checked against them); cheap to compress."""
  n = data.SPLIT_SIZES[split]
  images = np.tile(np.random.default_rng(seed).integers(0, 256, size=(1, 784), dtype=np.uint8), (n, 1))
  images[:, 0] = np.arange(n) % 256    # rows differ
  labels = (np.arange(n) % 10).astype(np.int32)
  return images, labels


def _write_fake_cache(data_dir, tfds_name="mnist"):
  """Writes a fake cache of every split; returns the arrays of "train"."""
  for split in data.SPLITS:
    raw_data.write_cache(raw_data.cache_path(str(data_dir), tfds_name, split), *_fake_split(split))
  return _fake_split("train")


def test_cache_is_read_and_memoised(tmp_path):
  images, labels = _write_fake_cache(tmp_path)
  assert sorted(os.listdir(tmp_path / raw_data.CACHE_DIRNAME)) == [
      "mnist-test.npz", "mnist-train.npz", "mnist-validation.npz"]  # No temp files left.
  s = data.load_split("mnist", "train", data_dir=tmp_path, raw_data_dir=tmp_path / "none")
  np.testing.assert_allclose(s.images, images / 255.0, rtol=1e-6)
  np.testing.assert_array_equal(s.labels, labels)
  # Memoised in-process; dynamic_binarized_mnist shares MNIST's arrays.
  assert data.load_split("mnist", "train", data_dir=tmp_path, raw_data_dir=tmp_path / "none") is s
  assert data.load_split("dynamic_binarized_mnist", "train", data_dir=tmp_path,
                         raw_data_dir=tmp_path / "none") is s


def test_cached_load_does_not_import_tensorflow(tmp_path):
  _write_fake_cache(tmp_path)
  code = (
      "import sys; from vae_jax.datasets import data; "
      f"s = data.load_split('mnist', 'test', data_dir={str(tmp_path)!r}); "
      "assert s.images.shape == (10000, 784); "
      "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
  env = {k: v for k, v in os.environ.items() if k != data.RAW_DATA_ENV}
  subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120,
                 cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_missing_raw_files_fail_fast(tmp_path):
  raw = tmp_path / "raw" / "mnist"
  raw.mkdir(parents=True)
  (raw / "train-images-idx3-ubyte.gz").write_bytes(b"")  # Only the name matters here.
  start = time.monotonic()
  with pytest.raises(data.DataError) as err:
    data.load_split("mnist", "train", data_dir=tmp_path / "tfds", raw_data_dir=tmp_path / "raw")
  assert time.monotonic() - start < 10
  message = str(err.value)
  assert "\n" not in message and str(raw) in message
  assert "t10k-labels-idx1-ubyte.gz" in message and "train-labels-idx1-ubyte.gz" in message


def _corrupt(split, binary):
  """(name -> arrays) of caches that are wrong in one way each (issue 18, class 7)."""
  images, labels = _fake_split(split)
  n = len(images)
  if binary:
    images = images % 2
  cases = {
      "float_images_in_0_1": (images.astype(np.float32) / 255, labels),
      "images_28x28": (images.reshape(n, 28, 28), labels),
      "too_few_images": (images[:30], labels[:30]),
      "too_many_images": (np.concatenate([images, images[:5]]), np.concatenate([labels, labels[:5]])),
      "int64_images": (images.astype(np.int64), labels),
  }
  if binary:
    cases.update(pixels_255=(images * 255, None), labels_present=(images, labels))
  else:
    cases.update(binary_pixels=(images % 2, labels), no_labels=(images, None),
                 label_10=(images, labels + 1), float_labels=(images, labels.astype(np.float32)),
                 labels_2d=(images, labels[:, None]))
  return cases


@pytest.mark.parametrize("name,case", [
    (name, case) for name in ("mnist", "binarized_mnist")
    for case in _corrupt("test", name == "binarized_mnist")])
def test_a_wrong_cache_is_never_used(tmp_path, name, case):
  """A cache of the wrong dtype, range, shape, count or labels is rebuilt; here it cannot be
  (no raw files), so loading stops with one line instead of returning the wrong arrays."""
  images, labels = _corrupt("test", name == "binarized_mnist")[case]
  path = raw_data.cache_path(str(tmp_path), name, "test")
  raw_data.write_cache(path, images, labels)
  before = open(path, "rb").read()
  with pytest.warns(UserWarning, match=f"data cache {path} holds .*; rebuilding it"):
    with pytest.raises(data.DataError, match="missing from") as err:
      data.load_split(name, "test", data_dir=tmp_path, raw_data_dir=tmp_path / "no_raw_files")
  assert "\n" not in str(err.value)
  assert open(path, "rb").read() == before   # not rebuilt, so not touched


@pytest.mark.parametrize("content", [b"", b"not a zip file", b"PK\x03\x04 truncated"])
def test_an_unreadable_cache_is_rebuilt(tmp_path, content):
  path = raw_data.cache_path(str(tmp_path), "mnist", "validation")
  os.makedirs(os.path.dirname(path))
  open(path, "wb").write(content)
  with pytest.raises(data.DataError, match="missing from"):
    data.load_split("mnist", "validation", data_dir=tmp_path, raw_data_dir=tmp_path / "none")


def test_valid_fake_cache_passes_the_check():
  for split in data.SPLITS:
    assert data.arrays_problem(*_fake_split(split), split, binary=False) is None
    assert data.arrays_problem(_fake_split(split)[0] % 2, None, split, binary=True) is None


@pytest.mark.parametrize("bad_split", ["validation", "test"])
def test_a_bad_cache_stops_training_before_the_workdir_is_written(tmp_path, bad_split):
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  from vae_jax.run import train  # pylint: disable=g-import-not-at-top
  _write_fake_cache(tmp_path / "tfds")
  images, labels = _fake_split(bad_split)
  raw_data.write_cache(raw_data.cache_path(str(tmp_path / "tfds"), "mnist", bad_split),
                       images.reshape(-1, 28, 28), labels)
  config = tiny_config(tmp_path / "no_raw_files", tmp_path / "tfds")
  with pytest.warns(UserWarning, match=f"mnist-{bad_split}.npz holds images of shape"):
    with pytest.raises(data.DataError, match="missing from"):
      train.train_and_evaluate(config, str(tmp_path / "workdir"))
  assert not (tmp_path / "workdir").exists()


# ---------------------------------------- offline, no raw files (issue 18, class 8)


@pytest.fixture
def offline(monkeypatch):
  """Every internet connection attempt fails at once, as on a machine without network."""
  def refuse(sock, address):
    raise OSError(f"network unreachable: {address}")
  monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("name", ["mnist", "binarized_mnist"])
def test_offline_without_raw_files_fails_in_seconds_naming_the_variable(tmp_path, offline, name):
  start = time.monotonic()
  with pytest.raises(data.DataError) as err:
    data.load_split(name, "test", data_dir=tmp_path / "tfds")
  assert time.monotonic() - start < raw_data.PROBE_TIMEOUT_S + 10
  message = str(err.value)
  assert "\n" not in message and "$VAE_JAX_RAW_DATA_DIR" in message
  assert all(f in message for f in raw_data.RAW_FILES[name])
  assert not (tmp_path / "tfds").exists()   # nothing half-prepared, not even the folder


def test_a_failed_download_leaves_no_folder_behind(tmp_path, offline, monkeypatch):
  """The host answered the probe but the download broke: one line, and TFDS's folders removed."""
  import requests  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(raw_data, "reachable", lambda url: True)
  (tmp_path / "tfds" / "downloads" / "other").mkdir(parents=True)   # not ours: kept

  def broken_download(builder, download_dir, download_config):
    del download_config
    os.makedirs(download_dir)
    os.makedirs(os.path.join(str(tmp_path / "tfds"), "mnist", "incomplete.ABC_3.0.1"))
    raise requests.exceptions.ConnectionError("Max retries exceeded with url: /mnist/")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", broken_download)
  with pytest.raises(data.DataError, match=r"download failed \(ConnectionError\); set \$VAE_JAX_RAW"):
    data.load_split("mnist", "test", data_dir=tmp_path / "tfds")
  assert sorted(os.listdir(tmp_path / "tfds")) == ["downloads", raw_data.CACHE_DIRNAME]
  assert os.listdir(tmp_path / "tfds" / "downloads") == ["other"]


# -------------------------------------------------------------------- batching


def test_epoch_permutation_deterministic_and_seeded():
  a = data.epoch_permutation(0, 3, 1000)
  np.testing.assert_array_equal(a, data.epoch_permutation(0, 3, 1000))
  assert sorted(a) == list(range(1000))
  assert not np.array_equal(a, data.epoch_permutation(1, 3, 1000))  # other seed
  assert not np.array_equal(a, data.epoch_permutation(0, 4, 1000))  # other epoch
  with pytest.raises(data.DataError):
    data.epoch_permutation(-1, 0, 10)


def test_num_batches():
  assert data.num_batches(100, 10) == 10 and data.num_batches(105, 10) == 10
  for bad in (0, -1, 101):
    with pytest.raises(data.DataError, match="batch_size"):
      data.num_batches(100, bad)


def _ids(n, dim=3):
  """Images whose every feature is the example index: batches reveal the order."""
  return np.repeat(np.arange(n, dtype=np.float32)[:, None], dim, axis=1)


def test_epoch_batches_every_example_once():
  batches = data.epoch_batches(_ids(120), 12, seed=5, epoch=0)
  assert batches.shape == (10, 12, 3)
  assert sorted(batches[..., 0].ravel()) == list(range(120))
  np.testing.assert_array_equal(batches, data.epoch_batches(_ids(120), 12, seed=5, epoch=0))
  assert not np.array_equal(batches, data.epoch_batches(_ids(120), 12, seed=6, epoch=0))


def test_epoch_batches_drop_remainder():
  seen = set()
  for epoch in range(20):
    batches = data.epoch_batches(_ids(105), 10, seed=0, epoch=epoch)
    ids = batches[..., 0].ravel()
    assert batches.shape == (10, 10, 3) and len(set(ids)) == 100  # at most once
    seen |= set(ids)
  assert len(seen) == 105  # the dropped ones change with the epoch


def test_epoch_batches_on_real_sized_split_layout(tmp_path):
  s = _mock_load("mnist", "train", tmp_path)
  batches = data.epoch_batches(s.images, 25, seed=0, epoch=0)
  assert batches.shape == (4, 25, 784) and batches.dtype == np.float32


def test_iterate_batches():
  split = data.Split(images=_ids(50), labels=np.arange(50, dtype=np.int32))
  pairs = list(data.iterate_batches(split, 8, 3, 1, with_labels=True))
  assert len(pairs) == 6
  for images, labels in pairs:
    np.testing.assert_array_equal(images[:, 0], labels)
  ordered = list(data.iterate_batches(split, 8, None, 0, drop_remainder=False))
  assert [len(b) for b in ordered] == [8] * 6 + [2]
  np.testing.assert_array_equal(np.concatenate(ordered)[:, 0], np.arange(50))
  with pytest.raises(data.DataError, match="no labels"):
    data.iterate_batches(data.Split(_ids(5), None), 2, 0, 0, with_labels=True)
  with pytest.raises(data.DataError):
    data.iterate_batches(split, 51, 0, 0)  # raised at the call, not at the first next()


def test_prefetch_to_device_keeps_size_in_flight():
  consumed = []

  def source():
    for i in range(5):
      consumed.append(i)
      yield np.full((2,), i, np.float32), np.int32(i)

  it = data.prefetch_to_device(source(), size=2)
  first = next(it)
  assert len(consumed) == 2
  assert isinstance(first[0], jax.Array) and float(first[0][0]) == 0
  rest = list(it)
  assert [int(b[1]) for b in rest] == [1, 2, 3, 4]
  with pytest.raises(data.DataError):
    data.prefetch_to_device(source(), size=0)


# ------------------------------------------------------------------- binarize


def test_binarize_values_and_mean():
  p = jnp.linspace(0.0, 1.0, 11, dtype=jnp.float32)
  images = jnp.tile(p, (20_000, 1))
  sample = jax.jit(data.binarize)(jax.random.key(0), images)
  assert sample.dtype == images.dtype and sample.shape == images.shape
  assert set(np.unique(np.asarray(sample))) <= {0.0, 1.0}
  # Monte Carlo: standard error <= sqrt(0.25 / 20000) = 0.0035.
  np.testing.assert_allclose(np.asarray(sample.mean(0)), np.asarray(p), atol=0.02)
  assert float(sample[:, 0].max()) == 0 and float(sample[:, -1].min()) == 1
  other = data.binarize(jax.random.key(1), images)
  assert not np.array_equal(np.asarray(sample), np.asarray(other))


# --------------------------------------------------------------- check_images


def test_check_images_accepts_valid():
  x = np.random.default_rng(0).random((4, 784), dtype=np.float32)
  assert data.check_images(x) is x
  assert data.check_images([[0.5] * 10], input_dim=10).shape == (1, 10)
  jax.jit(lambda y: data.check_images(y) * 2)(jnp.asarray(x))  # shape-only under jit


@pytest.mark.parametrize("x,match", [
    (np.zeros((4, 28, 28)), r"shape \[\.\.\., 784\]"),
    (np.full((2, 784), np.nan), "NaN/inf"),
    (np.full((2, 784), 255, np.uint8), "divide uint8 pixels by 255"),
    (-np.ones((1, 784)), r"\[0, 1\]"),
    (np.array([["a"] * 784]), "dtype"),
])
def test_check_images_rejects(x, match):
  with pytest.raises(data.DataError, match=match) as err:
    data.check_images(x)
  assert "\n" not in str(err.value)
