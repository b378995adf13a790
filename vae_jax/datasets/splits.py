"""The splits a run sees: a config's dataset, subset and binarisation, as arrays."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae_jax.datasets import data as data_lib

# Seed of the fixed binarisation of the evaluation splits of dynamically
# binarised MNIST, so that every run (any seed) is evaluated on the same binary
# images.
EVAL_BINARIZATION_SEED = 2016


def fixed_binarization(images: np.ndarray, indices: np.ndarray,
                       seed: int = EVAL_BINARIZATION_SEED) -> np.ndarray:
  """Bernoulli(intensity) pixels that depend only on (seed, image index, pixel index).

  Pixel j of image n is 1 exactly when u < intensity, where u is the first
  32-bit word of `key_data(fold_in(fold_in(key(seed), n), j))` (threefry2x32)
  with its top 24 bits read as a fraction in [0, 1). `fold_in` is one threefry
  hash of its arguments: unlike `random.uniform` or `random.split`, it does not
  depend on `jax_threefry_partitionable` or on the shape of the batch, so image
  n gets the same pixels in every JAX version, in every subset and order.

  Args:
    images: [N, ...] intensities in [0, 1].
    indices: [N] the index of each image in its split (n above).
    seed: the seed of the binarisation.

  Returns:
    A float32 array of images' shape holding 0s and 1s.
  """
  images = np.asarray(images, np.float32)
  u = _uniforms(jnp.asarray(indices, jnp.uint32), images[0].size if len(images) else 0, seed)
  return (np.asarray(u).reshape(images.shape) < images).astype(np.float32)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _uniforms(indices: jax.Array, num_pixels: int, seed: int) -> jax.Array:
  """[len(indices), num_pixels] uniforms in [0, 1), each from its (seed, image, pixel) key."""
  root = jax.random.key(seed, impl="threefry2x32")
  pixels = jnp.arange(num_pixels, dtype=jnp.uint32)

  def image(n):
    keys = jax.vmap(lambda j: jax.random.fold_in(jax.random.fold_in(root, n), j))(pixels)
    return (jax.random.key_data(keys)[:, 0] >> 8).astype(jnp.float32) * 2.0**-24

  return jax.vmap(image)(indices)


def load_data(config: ml_collections.ConfigDict, split: str) -> data_lib.Split:
  """A split as in memory (without class data.exclude_label), evaluation splits of dynamic MNIST binarised once.

  The evaluation splits of dynamic_binarized_mnist are binarised by
  `fixed_binarization` with the index of each image in the whole split, so the
  first N images are the same binary images whatever `eval.num_examples`.
  """
  def load(name):
    return data_lib.load_split(config.data.name, name, data_dir=config.data.data_dir or None,
                               raw_data_dir=config.data.raw_data_dir or None)

  loaded = load(split)
  images, labels = loaded.images, loaded.labels
  if split == "train" and config.data.train_on_validation:
    held_out = load("validation")
    images = np.concatenate([images, held_out.images])
    labels = None if labels is None else np.concatenate([labels, held_out.labels])
  keep = np.arange(len(images))   # the index in the whole split of each image kept
  if config.data.exclude_label >= 0:
    if labels is None:
      raise ValueError(f"config.data.exclude_label={config.data.exclude_label}: {config.data.name}"
                       " has no labels; use -1 or a labelled dataset.")
    keep = keep[labels != config.data.exclude_label]
  limit = config.data.train_subset if split == "train" else config.eval.num_examples
  if limit:
    keep = keep[:limit]
  if len(keep) < len(images):
    images, labels = images[keep], None if labels is None else labels[keep]
  if split != "train" and data_lib.dataset_info(config.data.name).dynamic_binarization:
    images = fixed_binarization(images, keep)
  return data_lib.Split(images=images, labels=labels)
