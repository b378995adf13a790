"""The fixed binarisation of dynamic MNIST's evaluation splits: image n's pixels depend on n only."""
import hashlib

import jax
import numpy as np
import pytest

from conftest import tiny_config
from vae_jax.datasets import splits


def digest(images) -> str:
  return hashlib.sha256(np.packbits(np.asarray(images, np.uint8)).tobytes()).hexdigest()[:16]


def test_binarization_is_pinned():
  """The published test images: a change of JAX's fold_in (or of this code) shows here."""
  binary = splits.fixed_binarization(np.full((3, 784), 0.5, np.float32), np.array([0, 1, 9999]))
  assert digest(binary) == "26d2b8b92afb4bd0"
  assert binary.sum(axis=1).tolist() == [400.0, 403.0, 402.0]


@pytest.mark.parametrize("partitionable", [False, True])
def test_binarization_does_not_depend_on_the_rng_mode(partitionable):
  images = np.random.default_rng(0).uniform(size=(20, 784)).astype(np.float32)
  with jax.threefry_partitionable(partitionable):
    binary = splits.fixed_binarization(images, np.arange(20))
  assert digest(binary) == digest(splits.fixed_binarization(images, np.arange(20)))
  with jax.threefry_partitionable(partitionable):   # and the pinned images too
    pinned = splits.fixed_binarization(np.full((3, 784), 0.5, np.float32), np.array([0, 1, 9999]))
  assert digest(pinned) == "26d2b8b92afb4bd0"


def test_binarization_depends_on_the_index_not_on_the_batch():
  images = np.random.default_rng(1).uniform(size=(50, 784)).astype(np.float32)
  whole = splits.fixed_binarization(images, np.arange(50))
  np.testing.assert_array_equal(splits.fixed_binarization(images[7:12], np.arange(7, 12)), whole[7:12])
  np.testing.assert_array_equal(splits.fixed_binarization(images[[30, 2]], np.array([30, 2])), whole[[30, 2]])
  same = np.full((2, 784), 0.5, np.float32)   # two images of equal intensities get different pixels
  assert not np.array_equal(*splits.fixed_binarization(same, np.array([0, 1])))


def test_binarization_is_bernoulli_of_the_intensity():
  for p in (0.0, 0.1, 0.5, 0.9, 1.0):
    binary = splits.fixed_binarization(np.full((100, 784), p, np.float32), np.arange(100))
    assert set(np.unique(binary)) <= {0.0, 1.0}
    assert abs(binary.mean() - p) < 0.005   # 78400 pixels: 5 standard errors at p = 0.5


def test_first_n_test_images_are_the_same_whatever_num_examples(raw_data, tfds_data_dir):
  config = tiny_config(raw_data, tfds_data_dir, data__name="dynamic_binarized_mnist", eval__num_examples=0)
  full = splits.load_data(config, "test").images
  assert full.shape == (10000, 784) and set(np.unique(full)) == {0.0, 1.0}
  config.eval.num_examples = 10
  np.testing.assert_array_equal(splits.load_data(config, "test").images, full[:10])
  intensities = splits.data_lib.load_split("mnist", "test", data_dir=tfds_data_dir,
                                           raw_data_dir=str(raw_data))
  config.eval.num_examples, config.data.exclude_label = 0, 3   # image n keeps its pixels when others go
  np.testing.assert_array_equal(splits.load_data(config, "test").images, full[intensities.labels != 3])
  np.testing.assert_array_equal(full, splits.fixed_binarization(intensities.images, np.arange(10000)))
