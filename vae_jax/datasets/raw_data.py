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

Failing early and cleanly (`check_source`, `prepared_builder`): missing raw
files are named before TFDS runs; without a raw folder, the download host is
probed for a few seconds before TFDS (whose retries take minutes) may try; a
preparation that fails removes the folders it created; prepared data that
TFDS cannot read gives one line naming the folder to delete.
"""

import contextlib
import os
import re
import shutil
import socket
import sys
import threading
import urllib.parse
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
# Where TFDS 4.9 downloads them from.
DOWNLOAD_URLS = {
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "binarized_mnist": "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",
}
PROBE_TIMEOUT_S = 5.0


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


def prepared_dir(tfds_name, data_dir):
  """The folder where TFDS keeps the prepared `tfds_name` (deleting it makes TFDS prepare it again)."""
  return os.path.join(data_dir, tfds_name)


def _raw_files_hint(tfds_name):
  return (f"set ${RAW_DATA_ENV} (or config.data.raw_data_dir) to a folder holding "
          f"{tfds_name}/{{{','.join(RAW_FILES[tfds_name])}}}")


def reachable(url, timeout=PROBE_TIMEOUT_S):
  """Whether a TCP connection to the host of `url` opens within `timeout` seconds (DNS included)."""
  parts = urllib.parse.urlsplit(url)
  port = parts.port or (443 if parts.scheme == "https" else 80)
  opened = []

  def connect():
    try:
      socket.create_connection((parts.hostname, port), timeout=timeout).close()
      opened.append(True)
    except OSError:
      pass

  thread = threading.Thread(target=connect, daemon=True)  # getaddrinfo has no timeout of its own
  thread.start()
  thread.join(timeout)
  return bool(opened)


def _unreadable(tfds_name, data_dir, err):
  """DataError for prepared data that TFDS fails to read, naming the folder to delete."""
  text = re.sub(r"\{\{.*?\}\}|\[Op:\w+\]( name: )?", "", str(err)).strip().splitlines()
  cause = f"{type(err).__name__}: {text[0].strip() if text else ''}".rstrip(": ")
  return DataError(
      f"{tfds_name}: the prepared dataset under {prepared_dir(tfds_name, data_dir)} cannot be read"
      f" ({cause[:200]}); delete that folder to prepare it again from the raw files")


def _builder(tfds_name, data_dir):
  """`tfds.builder`, with damaged prepared metadata as a DataError."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return tfds.builder(tfds_name, data_dir=data_dir)
  except Exception as err:  # pylint: disable=broad-except  (protobuf/JSON/OS errors of its files)
    raise _unreadable(tfds_name, data_dir, err) from err


def check_source(tfds_name, data_dir, raw_dir):
  """Raises at once, writing nothing, if `tfds_name` is neither prepared nor obtainable.

  Args:
    tfds_name: "mnist", "fashion_mnist" or "binarized_mnist".
    data_dir: absolute TFDS data_dir.
    raw_dir: absolute raw-file folder, or None (TFDS downloads).

  Returns:
    The TFDS builder (see `prepared_builder`).

  Raises:
    DataError: raw files missing from `raw_dir`; or no `raw_dir` and the
      download host cannot be reached within `PROBE_TIMEOUT_S` seconds.
  """
  builder = _builder(tfds_name, data_dir)
  if tfds_is_mocked() or builder.is_prepared():
    return builder
  if raw_dir is not None:
    folder = os.path.join(raw_dir, tfds_name)
    missing = missing_raw_files(tfds_name, raw_dir)
    if missing:
      raise DataError(
          f"{tfds_name}: raw file(s) {', '.join(missing)} missing from {folder}; "
          f"put the original files there (all of: {', '.join(RAW_FILES[tfds_name])}) "
          f"or unset raw_data_dir/${RAW_DATA_ENV} to download with TFDS")
  elif not reachable(DOWNLOAD_URLS[tfds_name]):
    host = urllib.parse.urlsplit(DOWNLOAD_URLS[tfds_name]).hostname
    raise DataError(
        f"{tfds_name} is not prepared under {data_dir} and {host} cannot be reached (offline?);"
        f" {_raw_files_hint(tfds_name)}")
  return builder


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
    DataError: see `check_source`; raw files that do not match TFDS's
      checksums; a download that fails. A failed preparation leaves no
      folder behind that it created.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = check_source(tfds_name, data_dir, raw_dir)
  _import_tensorflow()
  if tfds_is_mocked() or builder.is_prepared():  # download_and_prepare is a no-op under the mock.
    return builder
  config = None
  if raw_dir is not None:
    config = tfds.download.DownloadConfig(manual_dir=os.path.join(raw_dir, tfds_name))
  # Own download_dir per dataset: extracted files are named after the archive
  # and mnist/fashion_mnist share names, so a shared folder mixes them up.
  created = [folder for folder in (os.path.join(data_dir, "downloads", tfds_name),
                                   prepared_dir(tfds_name, data_dir))
             if not os.path.exists(folder)]
  from tensorflow_datasets.core.download import download_manager  # pylint: disable=g-import-not-at-top
  try:
    builder.download_and_prepare(download_dir=os.path.join(data_dir, "downloads", tfds_name),
                                 download_config=config)
  except BaseException as err:
    for folder in created:
      shutil.rmtree(folder, ignore_errors=True)
    if isinstance(err, download_manager.NonMatchingChecksumError):
      match = re.search(r"downloaded to (.+?), has wrong checksum", str(err))
      where = match.group(1) if match else str(err).splitlines()[0]
      raise DataError(
          f"{tfds_name}: raw file {where} does not match the checksum TFDS expects "
          "(truncated or wrong file?); replace it with the original download") from err
    if raw_dir is None and isinstance(err, Exception):
      raise DataError(f"{tfds_name}: the download failed ({type(err).__name__});"
                      f" {_raw_files_hint(tfds_name)}") from err
    raise
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
  try:
    # Not batch_size=-1: under mock_data the split sizes are unknown.
    parts = list(tfds.as_numpy(builder.as_dataset(split=split).batch(10_000)))
  except Exception as err:  # pylint: disable=broad-except  (TF's DataLossError, NotFoundError, ...)
    raise _unreadable(builder.name, os.path.dirname(os.path.dirname(builder.data_dir)), err) from err
  images = np.concatenate([p["image"] for p in parts]).astype(np.uint8)
  images = images.reshape(len(images), -1)
  labels = None
  if "label" in parts[0]:
    labels = np.concatenate([p["label"] for p in parts]).astype(np.int32)
  return images, labels
