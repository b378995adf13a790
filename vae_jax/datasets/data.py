"""Input pipeline: MNIST, Fashion-MNIST and static/dynamic binarised MNIST.

Datasets (`DATASETS`):

* ``mnist``, ``fashion_mnist``: intensities in [0, 1] (uint8 / 255).
* ``binarized_mnist``: the fixed binarisation of Larochelle & Murray (pixels
  exactly 0 or 1, no labels); its own TFDS train/validation/test
  (50000/10000/10000).
* ``dynamic_binarized_mnist``: MNIST *intensities*; the training code draws
  new Bernoulli pixels every step with `binarize` (the IWAE benchmark). Static
  and dynamic binarisation are different benchmarks (published numbers differ
  by about 2 nats): always say which one a number is on.

Splits: for mnist, fashion_mnist and dynamic_binarized_mnist, ``validation``
is the last 10000 examples of the TFDS train split and ``train`` the first
50000 (in general the last min(10000, N // 6) of N, which only matters under
`tfds.testing.mock_data`); ``test`` is the TFDS test split.

Where the data comes from (see `load_split`): TFDS prepares each dataset once
under ``data_dir`` (downloading it, or offline from a folder of raw files named
by ``raw_data_dir`` / $VAE_JAX_RAW_DATA_DIR), then every split is cached as a
compressed npz under ``<data_dir>/vae_jax_cache/`` and later loads read only
that file, without importing TensorFlow.

Batching: each split is one in-memory array, shuffled per epoch by a
permutation that depends only on (seed, epoch); fixed-size batches, remainder
dropped (`epoch_batches`). The whole epoch is one array, so it can be put on
device once (``jax.device_put(epoch_batches(...))``) and scanned with
`jax.lax.scan`; or batches can be streamed with `prefetch_to_device`.
"""

import collections
import dataclasses
import functools
import itertools
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.datasets import raw_data
from vae_jax.datasets.raw_data import RAW_DATA_ENV, DataError  # pylint: disable=unused-import  (public API)

DATASETS = ("mnist", "fashion_mnist", "binarized_mnist", "dynamic_binarized_mnist")
SPLITS = ("train", "validation", "test")
VALIDATION_SIZE = 10_000
# Examples per split of every real dataset (mock data aside): MNIST's 60000 are 50000 + 10000.
SPLIT_SIZES = {"train": 50_000, "validation": VALIDATION_SIZE, "test": 10_000}
IMAGE_SHAPE = (28, 28, 1)
INPUT_DIM = 28 * 28

_TFDS_NAME = {
    "mnist": "mnist",
    "fashion_mnist": "fashion_mnist",
    "binarized_mnist": "binarized_mnist",
    "dynamic_binarized_mnist": "mnist",
}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static facts about a dataset.

  Attributes:
    name: one of `DATASETS`.
    image_shape: (28, 28, 1); `Split.images` holds them flattened to 784.
    num_classes: 10, or None when TFDS has no labels (binarized_mnist).
    binary: pixels are already exactly 0/1 (binarized_mnist).
    dynamic_binarization: training should resample pixels with `binarize`.
  """
  name: str
  image_shape: tuple
  num_classes: int | None
  binary: bool
  dynamic_binarization: bool


def dataset_info(name):
  """Returns the `DatasetInfo` of `name`; DataError for an unknown name."""
  if name not in DATASETS:
    raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
  binary = name == "binarized_mnist"
  return DatasetInfo(
      name=name,
      image_shape=IMAGE_SHAPE,
      num_classes=None if binary else 10,
      binary=binary,
      dynamic_binarization=name == "dynamic_binarized_mnist")


@dataclasses.dataclass(frozen=True)
class Split:
  """One split in memory (read-only arrays, shared by every caller).

  Attributes:
    images: [N, 784] float32 in [0, 1] (exactly 0/1 for binarized_mnist).
    labels: [N] int32 class labels, or None (binarized_mnist).
  """
  images: np.ndarray
  labels: np.ndarray | None

  def __len__(self):
    return len(self.images)


def load_split(name, split, *, data_dir=None, raw_data_dir=None):
  """Loads one split of a dataset into memory.

  Args:
    name: one of `DATASETS`.
    split: "train", "validation" or "test" (see the module docstring).
    data_dir: where TFDS keeps prepared data and we keep the npz cache;
      default $TFDS_DATA_DIR or ~/tensorflow_datasets.
    raw_data_dir: folder of raw files laid out as ``<dir>/<tfds name>/<original
      file names>`` (dynamic_binarized_mnist reads ``mnist/``); default
      $VAE_JAX_RAW_DATA_DIR; None means TFDS downloads as usual.

  Returns:
    A `Split`; repeated calls with the same arguments return the same object.

  Raises:
    DataError: unknown name or split, missing raw files (raised before TFDS
      is called), or raw files that fail TFDS's checksum.
  """
  info = dataset_info(name)
  if split not in SPLITS:
    raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
  tfds_name = _TFDS_NAME[name]
  data_dir = raw_data.resolve_data_dir(data_dir)
  raw_dir = raw_data.resolve_raw_data_dir(raw_data_dir)
  if raw_data.tfds_is_mocked():  # Fake data: no raw files, no caches.
    images, labels = _read_from_tfds(tfds_name, split, data_dir, raw_dir)[split]
    return _to_split(images, labels, info.binary)
  return _load_cached(tfds_name, split, data_dir, raw_dir, info.binary)


def arrays_problem(images, labels, split, binary):
  """What is wrong with the uint8 arrays of a real split (cache or TFDS), or None.

  Args:
    images: should be uint8 [SPLIT_SIZES[split], 784]; pixels 0..255 (some
      above 1), or only 0/1 when `binary`.
    labels: int [N] in 0..9, or None exactly when `binary`.
    split: one of `SPLITS`.
    binary: binarized_mnist.

  Returns:
    A short description of the first problem found, or None.
  """
  size = SPLIT_SIZES[split]
  if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
    return f"images of dtype {getattr(images, 'dtype', type(images).__name__)}, expected uint8 pixels"
  if images.shape != (size, INPUT_DIM):
    return f"images of shape {images.shape}, expected ({size}, {INPUT_DIM})"
  high = int(images.max())
  if binary and high > 1:
    return f"pixel values up to {high}, expected 0/1"
  if not binary and high <= 1:
    return f"pixel values only 0/1, expected intensities 0..255"
  if binary != (labels is None):
    return "labels present, expected none" if binary else "no labels, expected 10 classes"
  if labels is not None:
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (size,):
      return f"labels of dtype {labels.dtype} and shape {labels.shape}, expected int ({size},)"
    if labels.min() < 0 or labels.max() > 9:
      return f"labels in [{labels.min()}, {labels.max()}], expected 0..9"
  return None


def _read_valid_cache(path, split, binary):
  """The arrays of a cache file, or None if it is missing, unreadable or wrong (then rebuilt)."""
  arrays = raw_data.read_cache(path)
  problem = arrays is not None and arrays_problem(*arrays, split, binary)
  if problem:
    warnings.warn(f"vae_jax: the data cache {path} holds {problem}; rebuilding it from the"
                  " prepared TFDS data")
    return None
  return arrays


@functools.lru_cache(maxsize=16)
def _load_cached(tfds_name, split, data_dir, raw_dir, binary):
  """`load_split` through the npz cache (checked on every read), memoised in-process."""
  path = raw_data.cache_path(data_dir, tfds_name, split)
  arrays = _read_valid_cache(path, split, binary)
  if arrays is None:
    raw_data.check_source(tfds_name, data_dir, raw_dir)  # before the lock creates any folder
    with raw_data.cache_lock(data_dir, tfds_name):
      arrays = _read_valid_cache(path, split, binary)  # Another process may have written it.
      if arrays is None:
        loaded = _read_from_tfds(tfds_name, split, data_dir, raw_dir)
        for our_split, (images, labels) in loaded.items():
          problem = arrays_problem(images, labels, our_split, binary)
          if problem:
            raise DataError(
                f"{tfds_name}: the TFDS data prepared under {data_dir} gives {our_split} {problem};"
                f" delete {raw_data.prepared_dir(tfds_name, data_dir)} to prepare it again")
          try:
            raw_data.write_cache(
                raw_data.cache_path(data_dir, tfds_name, our_split), images, labels)
          except OSError as err:  # e.g. a read-only shared data_dir
            warnings.warn(f"vae_jax: not caching {tfds_name}/{our_split}: {err}")
        arrays = loaded[split]
  return _to_split(*arrays, binary)


def _read_from_tfds(tfds_name, split, data_dir, raw_dir):
  """Reads the TFDS split behind `split`; returns {our split: (uint8 images, labels)}.

  For datasets without a TFDS validation split, reading train or validation
  reads TFDS train and returns both.
  """
  builder = raw_data.prepared_builder(tfds_name, data_dir, raw_dir)
  if tfds_name == "binarized_mnist":
    images, labels = raw_data.read_tfds_split(builder, split)
    if images.size and images.max() > 1:
      raise DataError(
          f"binarized_mnist: pixel values up to {images.max()}, expected 0/1; "
          "delete the prepared dataset under data_dir (under "
          "tfds.testing.mock_data pass max_value=2)")
    return {split: (images, labels)}
  if split == "test":
    return {"test": raw_data.read_tfds_split(builder, "test")}
  images, labels = raw_data.read_tfds_split(builder, "train")
  num_train = len(images) - min(VALIDATION_SIZE, len(images) // 6)
  return {"train": (images[:num_train], labels[:num_train]),
          "validation": (images[num_train:], labels[num_train:])}


def _to_split(images, labels, binary):
  """uint8 pixels -> read-only float32 `Split` ([0, 1], or 0/1 when binary)."""
  images = images.astype(np.float32)
  if not binary:
    images /= np.float32(255)
  images.flags.writeable = False
  if labels is not None:
    labels = np.array(labels, dtype=np.int32)
    labels.flags.writeable = False
  return Split(images=images, labels=labels)


def binarize(key, images):
  """Samples binary pixels ~ Bernoulli(intensity) (dynamic binarisation); jit-able.

  Args:
    key: a `jax.random` key; use a new one every step/epoch.
    images: float intensities in [0, 1], any shape.

  Returns:
    A jax.Array of the same shape and dtype holding 0s and 1s.
  """
  images = jnp.asarray(images)
  return jax.random.bernoulli(key, images).astype(images.dtype)


def epoch_permutation(seed, epoch, num_examples):
  """Returns the example order of an epoch, a function of (seed, epoch) only.

  Args:
    seed: non-negative int.
    epoch: non-negative int.
    num_examples: size of the split.

  Returns:
    int64 array, a permutation of range(num_examples).
  """
  if seed < 0 or epoch < 0:
    raise DataError(f"seed and epoch must be >= 0, got seed={seed}, epoch={epoch}")
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def num_batches(num_examples, batch_size):
  """Returns the number of full batches per epoch (the remainder is dropped)."""
  if batch_size <= 0 or batch_size > num_examples:
    raise DataError(
        f"batch_size={batch_size} must be between 1 and the number of "
        f"examples ({num_examples}); choose a smaller batch_size")
  return num_examples // batch_size


def epoch_batches(images, batch_size, seed, epoch):
  """Shuffles one epoch and cuts it into full batches.

  Every example appears at most once per epoch. The last
  ``len(images) % batch_size`` examples of the permutation are dropped; as the
  permutation changes every epoch they are seen in other epochs.

  Args:
    images: [N, D] array (e.g. `Split.images`).
    batch_size: examples per batch, 1 <= batch_size <= N.
    seed: shuffling seed (>= 0).
    epoch: epoch number (>= 0).

  Returns:
    np.ndarray [num_batches, batch_size, D], ready for `jax.device_put` and
    `jax.lax.scan`.
  """
  images = np.asarray(images)
  count = num_batches(len(images), batch_size)
  order = epoch_permutation(seed, epoch, len(images))[:count * batch_size]
  return images[order].reshape((count, batch_size) + images.shape[1:])


def iterate_batches(split, batch_size, seed, epoch, *, with_labels=False,
                    drop_remainder=True):
  """Iterates over a split in batches (for evaluation and applications).

  Args:
    split: a `Split`.
    batch_size: examples per batch.
    seed: shuffling seed (>= 0), or None for the stored order.
    epoch: epoch number (>= 0); ignored when seed is None.
    with_labels: yield (images, labels) pairs; DataError if the split has none.
    drop_remainder: True: only full batches (as `epoch_batches`). False: the
      last batch is smaller, so every example is seen once (a jitted function
      compiles once more for that shape).

  Returns:
    An iterator of [batch_size, D] float32 arrays (or (images, labels) pairs).
  """
  n = len(split.images)
  if with_labels and split.labels is None:
    raise DataError("this split has no labels (binarized_mnist); use with_labels=False")
  if drop_remainder:
    stop = num_batches(n, batch_size) * batch_size
  elif batch_size <= 0:
    raise DataError(f"batch_size={batch_size} must be >= 1")
  else:
    stop = n
  order = np.arange(n) if seed is None else epoch_permutation(seed, epoch, n)

  def generate():
    for start in range(0, stop, batch_size):
      index = order[start:start + batch_size]
      yield (split.images[index], split.labels[index]) if with_labels else split.images[index]

  return generate()


def prefetch_to_device(iterator, size=2):
  """Keeps `size` batches in flight on the default device.

  `jax.device_put` returns at once and copies in the background, so the
  next batches travel while the current step runs.

  Args:
    iterator: iterable of arrays or pytrees of arrays.
    size: number of batches transferred ahead (>= 1).

  Returns:
    An iterator over the same items as jax.Arrays on the device.
  """
  if size < 1:
    raise DataError(f"prefetch size must be >= 1, got {size}")
  iterator = iter(iterator)

  def generate():
    queue = collections.deque()
    def enqueue(count):
      for item in itertools.islice(iterator, count):
        queue.append(jax.device_put(item))
    enqueue(size)
    while queue:
      yield queue.popleft()
      enqueue(1)

  return generate()


def check_images(x, input_dim=INPUT_DIM):
  """Validates images given to the public API.

  Args:
    x: array-like [..., input_dim] of intensities in [0, 1]. Inside `jax.jit`
      only the shape can be checked.
    input_dim: expected size of the last axis (784 for flattened 28x28).

  Returns:
    x as an array (the same object when it already was one).

  Raises:
    DataError: wrong trailing shape, non-numeric dtype, non-finite values or
      values outside [0, 1].
  """
  if not hasattr(x, "shape") or not hasattr(x, "dtype"):
    x = np.asarray(x)
  if x.ndim < 1 or x.shape[-1] != input_dim:
    raise DataError(
        f"expected images of shape [..., {input_dim}] (flattened, intensities "
        f"in [0, 1]), got shape {tuple(x.shape)}; flatten with x.reshape(len(x), -1)")
  if not (jnp.issubdtype(x.dtype, jnp.number) or jnp.issubdtype(x.dtype, jnp.bool_)):
    raise DataError(f"expected numeric images with values in [0, 1], got dtype {x.dtype}")
  if isinstance(x, jax.core.Tracer) or x.size == 0:
    return x
  values = np.asarray(x)
  if not np.isfinite(values).all():
    raise DataError(
        f"images contain {np.size(values) - np.isfinite(values).sum()} NaN/inf "
        "values; expected finite intensities in [0, 1]")
  low, high = values.min(), values.max()
  if low < 0 or high > 1:
    raise DataError(
        f"image values lie in [{low}, {high}]; expected intensities in [0, 1] "
        "(divide uint8 pixels by 255)")
  return x
