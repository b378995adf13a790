"""Members trained in one vmapped program equal separate runs with their seed, β and η."""
import json

import jax
import numpy as np
import optax
import pytest

from conftest import tiny_config
from vae_jax.models import build
from vae_jax.run import checkpoints
from vae_jax import config as config_lib
from vae_jax.datasets import data
from vae_jax.run import optimizers
from vae_jax.scale import seeds
from vae_jax.run import train
from vae_jax.run import training
from vae_jax.models import vae as vae_lib


def test_member_indices_are_the_epoch_batches_of_each_seed():
  images = np.arange(103 * 2, dtype=np.float32).reshape(103, 2)
  indices = seeds.member_indices([4, 0, 9], epoch=2, num_examples=103, batch_size=10)
  assert indices.shape == (3, 10, 10) and indices.dtype == np.int32
  for i, seed in enumerate([4, 0, 9]):
    np.testing.assert_array_equal(images[indices[i]], data.epoch_batches(images, 10, seed, 2))


def test_init_states_stacks_seeds_betas_and_learning_rates():
  config = config_lib.default_config()
  model = vae_lib.VAE(hidden_widths=(8,), latent_dim=2)
  optimizer = optimizers.make_optimizer(config.optimizer, 10)
  states = seeds.init_states(model, optimizer, [3, 5], [1.0, 0.25], [1e-3, 4e-3])
  np.testing.assert_allclose(states.beta, [1.0, 0.25])
  np.testing.assert_allclose(optax.tree_utils.tree_get(states.opt_state, "learning_rate"), [1e-3, 4e-3])
  single = training.init_state(model, optimizer, 5, 0.25)
  for a, b in zip(jax.tree_util.tree_leaves(seeds.member_state(states, 1).params),
                  jax.tree_util.tree_leaves(single.params)):
    np.testing.assert_array_equal(a, b)


def test_members_reject_shape_changing_fields_and_scheduled_rates():
  config = config_lib.default_config()
  with pytest.raises(ValueError, match="model.latent_dim cannot vary"):
    seeds.member_values(config, [{"seed": 0}, {"model.latent_dim": 3}])
  config.optimizer.schedule = "cosine"
  with pytest.raises(ValueError, match="schedule='cosine'"):
    seeds.member_values(config, [{"optimizer.learning_rate": 1e-3}, {"optimizer.learning_rate": 2e-3}])
  with pytest.raises(ValueError, match="member 1"):
    seeds.member_values(config_lib.default_config(), [{"seed": 0}, {"objective.beta": -1.0}])


FAMILY = dict(model__upper_latent_dims=(2,), model__upper_hidden_widths=(2,), model__prior="vampprior",
              model__prior_components=4, training__ema_decay=0.9, objective__name="iwae",
              objective__num_samples=2, objective__estimator="dreg")


@pytest.mark.parametrize("family", [{}, FAMILY], ids=["one_layer", "two_layers_vampprior_dreg_ema"])
def test_vmapped_members_equal_separate_runs(raw_data, tfds_data_dir, tmp_path, family):
  """Member i of one vmapped program == `train.train_and_evaluate` with member i's values."""
  small = dict(eval__is_num_samples=0, eval__num_examples=100, **family)
  config = tiny_config(raw_data, tfds_data_dir, **small)
  members = [{"seed": 0}, {"seed": 1},
             {"seed": 2, "objective.beta": 0.5, "optimizer.learning_rate": 3e-3}]
  states, measured = seeds.train(config, members)
  steps = config.training.num_epochs * (config.data.train_subset // config.training.batch_size)
  assert measured["loss"].shape == (3, steps)
  for i in ((0, 2) if not family else (2,)):   # a plain seed, and a member with its own β and learning rate
    member = members[i]
    single = tiny_config(raw_data, tfds_data_dir, **small)
    single.update_from_flattened_dict(member)
    workdir = tmp_path / str(i)
    train.train_and_evaluate(single, str(workdir))
    model = build.build_model(single)
    optimizer = optimizers.make_optimizer(single.optimizer, steps)
    target = training.state_from_config(single, model, optimizer)
    store = checkpoints.CheckpointStore(str(workdir))
    separate, _ = store.restore_latest(target)
    store.close()
    vmapped = seeds.member_state(states, i)
    assert int(separate.step) == int(vmapped.step) == steps
    assert len(jax.tree_util.tree_leaves(vmapped.ema_params)) == (len(jax.tree_util.tree_leaves(vmapped.params)) if family else 0)
    for a, b in zip(jax.tree_util.tree_leaves((vmapped.params, vmapped.ema_params)),
                    jax.tree_util.tree_leaves((separate.params, separate.ema_params))):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    losses = [r["loss"] for r in map(json.loads, open(workdir / "metrics.jsonl")) if r["split"] == "train"]
    np.testing.assert_allclose(measured["loss"][i], losses, rtol=1e-4)
  # Different seeds really are different runs.
  assert not np.allclose(measured["loss"][0], measured["loss"][1])


def test_a_non_finite_member_is_dropped_alone():
  """One member's NaN batch leaves its state as it was; the others take the single-run update."""
  model = vae_lib.VAE(hidden_widths=(8,), latent_dim=2)
  optimizer = optimizers.make_optimizer(config_lib.default_config().optimizer, 10)
  make_step_fn = lambda **kw: training.make_step_fn(model, optimizer, objective="elbo", **kw)
  images = np.random.default_rng(0).uniform(size=(8, 784)).astype(np.float32)
  images[4:] = np.nan
  indices = np.array([[[0, 1, 2, 3]], [[4, 5, 6, 7]], [[3, 2, 1, 0]]], np.int32)   # [members, 1, B]
  states = seeds.init_states(model, optimizer, [0, 1, 2], [1.0] * 3)
  before = jax.tree_util.tree_map(np.array, states)   # a copy: the call donates `states`
  after, measured = seeds.vmap_train_steps(make_step_fn(member_axis=seeds.MEMBER_AXIS))(
      states, images, indices)
  np.testing.assert_array_equal(measured["finite"][:, 0], [1, 0, 1])
  np.testing.assert_array_equal(after.skipped, [0, 1, 0])
  for a, b in zip(jax.tree_util.tree_leaves(seeds.member_state(after, 1).params),
                  jax.tree_util.tree_leaves(seeds.member_state(before, 1).params)):
    np.testing.assert_array_equal(a, b)
  single_step = jax.jit(make_step_fn())
  for i in (0, 2):
    single, _ = single_step(training.init_state(model, optimizer, i), images[indices[i, 0]])
    for a, b in zip(jax.tree_util.tree_leaves(seeds.member_state(after, i).params),
                    jax.tree_util.tree_leaves(single.params)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
