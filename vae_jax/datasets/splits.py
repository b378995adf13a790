"""The splits a run sees: a config's dataset, subset and binarisation, as arrays."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae_jax.datasets import data as data_lib

# Fixed key for binarising evaluation splits of dynamically binarised MNIST, so
# that every run (any seed) is evaluated on the same binary test images.
EVAL_BINARIZATION_SEED = 2016


def load_data(config: ml_collections.ConfigDict, split: str) -> data_lib.Split:
  """A split as in memory (without class data.exclude_label), evaluation splits of dynamic MNIST binarised once."""
  def load(name):
    return data_lib.load_split(config.data.name, name, data_dir=config.data.data_dir or None,
                               raw_data_dir=config.data.raw_data_dir or None)

  loaded = load(split)
  images, labels = loaded.images, loaded.labels
  if split == "train" and config.data.train_on_validation:
    held_out = load("validation")
    images = np.concatenate([images, held_out.images])
    labels = None if labels is None else np.concatenate([labels, held_out.labels])
  if config.data.exclude_label >= 0:
    if labels is None:
      raise ValueError(f"config.data.exclude_label={config.data.exclude_label}: {config.data.name}"
                       " has no labels; use -1 or a labelled dataset.")
    keep = labels != config.data.exclude_label
    images, labels = images[keep], labels[keep]
  if split == "train" and config.data.train_subset:
    images = images[:config.data.train_subset]
    labels = None if labels is None else labels[:config.data.train_subset]
  elif split != "train" and config.eval.num_examples:
    images = images[:config.eval.num_examples]
    labels = None if labels is None else labels[:config.eval.num_examples]
  if split != "train" and data_lib.dataset_info(config.data.name).dynamic_binarization:
    key = jax.random.PRNGKey(EVAL_BINARIZATION_SEED)
    images = np.asarray(data_lib.binarize(key, jnp.asarray(images)))
  return data_lib.Split(images=images, labels=labels)
