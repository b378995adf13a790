"""TFDS preparation, raw-file checks and the on-disk npz cache behind `vae_jax.datasets.data`.

This module is the only part of `vae_jax` that talks to tensorflow-datasets and
TensorFlow. Both are imported lazily: a process that finds the npz cache never
imports TensorFlow.

A raw-file folder (for machines without internet) is laid out like
``../shared/data``, one sub-folder per TFDS dataset holding the original files:

    <raw_dir>/mnist/{train,t10k}-images-idx3-ubyte.gz, {train,t10k}-labels-idx1-ubyte.gz
    <raw_dir>/fashion_mnist/<the same four names>
    <raw_dir>/binarized_mnist/binarized_mnist_{train,valid,test}.amat

TFDS finds each file there by name (``DownloadConfig(manual_dir=...)``) and
checks its sha256 against the checksum list it ships.
"""

import contextlib
import os
import re
import sys
import uuid
import zipfile

import numpy as np

try:
  import fcntl  # POSIX only; without it concurrent first loads are not serialised.
except ImportError:  # pragma: no cover
  fcntl = None

RAW_DATA_ENV = "VAE_JAX_RAW_DATA_DIR"
CACHE_DIRNAME = "vae_jax_cache"

_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
# The original file names TFDS needs, per TFDS dataset name.
RAW_FILES = {
    "mnist": _IDX_FILES,
    "fashion_mnist": _IDX_FILES,
    "binarized_mnist": tuple(
        f"binarized_mnist_{s}.amat" for s in ("train", "valid", "test")),
}


class DataError(ValueError):
  """A dataset cannot be loaded or an input is invalid.

  The message is one line that names the problem and the fix.
  """


def resolve_data_dir(data_dir):
  """Returns the absolute TFDS data_dir: the argument, $TFDS_DATA_DIR, or ~/tensorflow_datasets."""
  if data_dir is None:
    data_dir = os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  return os.path.abspath(os.path.expanduser(os.fspath(data_dir)))


def resolve_raw_data_dir(raw_data_dir):
  """Returns the absolute raw-file folder: the argument, $VAE_JAX_RAW_DATA_DIR, or None (online)."""
  if raw_data_dir is None:
    raw_data_dir = os.environ.get(RAW_DATA_ENV) or None
  if raw_data_dir is None:
    return None
  return os.path.abspath(os.path.expanduser(os.fspath(raw_data_dir)))


def tfds_is_mocked():
  """Returns True inside `tfds.testing.mock_data` (it swaps `DatasetBuilder.download_and_prepare`)."""
  module = sys.modules.get("tensorflow_datasets.core.dataset_builder")
  if module is None:  # mock_data imports TFDS, so without TFDS there is no mock.
    return False
  method = module.DatasetBuilder.download_and_prepare
  return getattr(method, "__module__", "").startswith("tensorflow_datasets.testing")


def missing_raw_files(tfds_name, raw_dir):
  """Returns the names of the raw files of `tfds_name` absent from `<raw_dir>/<tfds_name>/`."""
  folder = os.path.join(raw_dir, tfds_name)
  return [f for f in RAW_FILES[tfds_name]
          if not os.path.isfile(os.path.join(folder, f))]


# ----------------------------------------------------------------------------
# npz cache: <data_dir>/vae_jax_cache/<tfds name>-<split>.npz, uint8 pixels [N, 784]
# and int32 labels [N] (absent for unlabelled datasets).


def cache_path(data_dir, tfds_name, split):
  """Returns the npz cache file of one of our splits (train/validation/test)."""
  return os.path.join(data_dir, CACHE_DIRNAME, f"{tfds_name}-{split}.npz")


def read_cache(path):
  """Reads a cache file.

  Args:
    path: file written by `write_cache`.

  Returns:
    (images uint8 [N, 784], labels int32 [N] or None), or None when the file is
    missing or unreadable (the caller then rebuilds it from TFDS).
  """
  try:
    with np.load(path) as archive:
      images = archive["images"]
      labels = archive["labels"] if "labels" in archive.files else None
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
    return None
  return images, labels


def write_cache(path, images, labels):
  """Writes a compressed npz atomically (temp file + os.replace): never a half file."""
  folder = os.path.dirname(path)
  os.makedirs(folder, exist_ok=True)
  tmp = f"{path}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"  # open() honours the umask
  try:
    arrays = {"images": images}
    if labels is not None:
      arrays["labels"] = labels
    with open(tmp, "xb") as f:
      np.savez_compressed(f, **arrays)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


@contextlib.contextmanager
def cache_lock(data_dir, tfds_name):
  """Holds an exclusive inter-process lock while one dataset is prepared and cached."""
  folder = os.path.join(data_dir, CACHE_DIRNAME)
  with contextlib.ExitStack() as stack:
    try:
      os.makedirs(folder, exist_ok=True)
      lock_file = stack.enter_context(open(os.path.join(folder, f".{tfds_name}.lock"), "w"))
    except OSError:  # Read-only data_dir: nothing will be cached either.
      lock_file = None
    if lock_file is not None and fcntl is not None:
      fcntl.flock(lock_file, fcntl.LOCK_EX)  # Released when the file is closed.
    yield


# ----------------------------------------------------------------------------
# TFDS


def _import_tensorflow():
  """Imports TensorFlow with every GPU hidden, so it never takes memory JAX needs."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # TF had already initialised its devices; nothing left to do.
    pass
  return tf


def prepared_builder(tfds_name, data_dir, raw_dir):
  """Returns a TFDS builder whose data is prepared under `data_dir`.

  Args:
    tfds_name: "mnist", "fashion_mnist" or "binarized_mnist".
    data_dir: absolute TFDS data_dir.
    raw_dir: absolute raw-file folder, or None to let TFDS download.

  Returns:
    The `tfds.core.DatasetBuilder`, ready for `as_dataset`.

  Raises:
    DataError: raw files are missing (checked before TFDS could try the
      network) or do not match TFDS's checksums.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(tfds_name, data_dir=data_dir)
  config = None
  if raw_dir is not None and not tfds_is_mocked():
    folder = os.path.join(raw_dir, tfds_name)
    missing = missing_raw_files(tfds_name, raw_dir)
    if missing and not builder.is_prepared():
      raise DataError(
          f"{tfds_name}: raw file(s) {', '.join(missing)} missing from {folder}; "
          f"put the original files there (all of: {', '.join(RAW_FILES[tfds_name])}) "
          f"or unset raw_data_dir/${RAW_DATA_ENV} to download with TFDS")
    config = tfds.download.DownloadConfig(manual_dir=folder)
  _import_tensorflow()
  if tfds_is_mocked():  # download_and_prepare is a no-op under the mock.
    return builder
  from tensorflow_datasets.core.download import download_manager  # pylint: disable=g-import-not-at-top
  try:
    # Own download_dir per dataset: extracted files are named after the archive
    # and mnist/fashion_mnist share names, so a shared folder mixes them up.
    builder.download_and_prepare(
        download_dir=os.path.join(data_dir, "downloads", tfds_name),
        download_config=config)
  except download_manager.NonMatchingChecksumError as err:
    match = re.search(r"downloaded to (.+?), has wrong checksum", str(err))
    where = match.group(1) if match else str(err).splitlines()[0]
    raise DataError(
        f"{tfds_name}: raw file {where} does not match the checksum TFDS expects "
        "(truncated or wrong file?); replace it with the original download") from err
  return builder


def read_tfds_split(builder, split):
  """Reads a whole TFDS split into memory.

  Args:
    builder: a prepared builder (see `prepared_builder`).
    split: TFDS split name.

  Returns:
    (images uint8 [N, 784], labels int32 [N] or None when the dataset has none).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  # Not batch_size=-1: under mock_data the split sizes are unknown.
  parts = list(tfds.as_numpy(builder.as_dataset(split=split).batch(10_000)))
  images = np.concatenate([p["image"] for p in parts]).astype(np.uint8)
  images = images.reshape(len(images), -1)
  labels = None
  if "label" in parts[0]:
    labels = np.concatenate([p["label"] for p in parts]).astype(np.int32)
  return images, labels
