"""The training step and loop: one trace, scan == loop, resume == uninterrupted, loss falls."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from vae_jax.models import build
from vae_jax.datasets import splits
from vae_jax.run import checkpoints as checkpoints_lib
from vae_jax.run import optimizers
from vae_jax.run import train
from vae_jax.run import training
from vae_jax.models import vae as vae_lib


def tiny_step(config):
  model = vae_lib.VAE(hidden_widths=(16,), latent_dim=2)
  optimizer = optimizers.make_optimizer(config.optimizer, 100)
  step_fn = training.make_step_fn(model, optimizer, objective="elbo")
  return model, optimizer, step_fn


def test_train_step_is_traced_once_and_reports_measurements():
  from vae_jax import config as config_lib
  model, optimizer, step_fn = tiny_step(config_lib.default_config())
  traces = []
  counted = lambda s, b: (traces.append(1), step_fn(s, b))[1]  # noqa: E731
  train_step = training.jit_train_step(counted)
  state = training.init_state(model, optimizer, seed=0)
  batches = jax.random.uniform(jax.random.PRNGKey(1), (5, 8, 784))
  for batch in batches:
    state, measured = train_step(state, batch)
  assert len(traces) == 1
  assert int(state.step) == 5
  for name in ("loss", "recon", "kl", "grad_norm", "param_norm"):
    assert np.isfinite(float(measured[name])), name
  assert float(measured["kl"]) >= 0


def test_scan_equals_per_step_loop():
  from vae_jax import config as config_lib
  model, optimizer, step_fn = tiny_step(config_lib.default_config())
  batches = jax.random.uniform(jax.random.PRNGKey(2), (6, 8, 784))
  state = training.init_state(model, optimizer, seed=3)
  step = training.jit_train_step(step_fn)
  for batch in batches:
    state, _ = step(state, batch)
  scanned, measured = training.jit_train_steps(step_fn)(training.init_state(model, optimizer, seed=3), batches)
  assert measured["loss"].shape == (6,)
  for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(scanned)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_non_finite_update_is_dropped():
  from vae_jax import config as config_lib
  model, optimizer, step_fn = tiny_step(config_lib.default_config())
  state = training.init_state(model, optimizer, seed=0)
  before = jax.tree_util.tree_leaves(state.params)
  bad = jnp.full((8, 784), jnp.nan)
  new, measured = jax.jit(step_fn)(state, bad)
  assert float(measured["finite"]) == 0 and int(new.skipped) == 1
  for a, b in zip(before, jax.tree_util.tree_leaves(new.params)):
    np.testing.assert_array_equal(a, b)


def test_end_to_end_training_loss_falls_and_writes_outputs(raw_data, tfds_data_dir, tmp_path):
  config = tiny_config(raw_data, tfds_data_dir, training__num_epochs=4, eval__write_images=True)
  results = train.train_and_evaluate(config, str(tmp_path))
  records = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  losses = [r["loss"] for r in records if r["split"] == "train"]
  assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, 65))
  assert np.mean(losses[-8:]) < np.mean(losses[:8]) - 50     # nats per image
  assert results["nll"] <= results["neg_elbo"] + 1e-3
  assert (tmp_path / "results.json").exists()
  assert (tmp_path / "images" / "final_reconstructions.png").exists()
  assert (tmp_path / "images" / "final_samples.png").exists()
  # Re-running a finished run does no work and returns the same results.
  assert train.train_and_evaluate(config, str(tmp_path)) == json.load(open(tmp_path / "results.json"))


def test_resume_is_bit_identical(raw_data, tfds_data_dir, tmp_path):
  config = tiny_config(raw_data, tfds_data_dir)
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  # Stop after epoch 1 (num_epochs=1), then continue to 2 epochs in the same workdir.
  half = tiny_config(raw_data, tfds_data_dir, training__num_epochs=1)
  train.train_and_evaluate(half, str(tmp_path / "resumed"))
  os.remove(tmp_path / "resumed" / "results.json")
  resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert resumed["neg_elbo"] == full["neg_elbo"] and resumed["nll"] == full["nll"]
  steps = [json.loads(l)["step"] for l in open(tmp_path / "resumed" / "metrics.jsonl")
           if json.loads(l)["split"] == "train"]
  assert steps == list(range(1, 33))


def test_workdir_written_before_a_new_config_field_still_resumes(raw_data, tfds_data_dir, tmp_path):
  config = tiny_config(raw_data, tfds_data_dir, training__num_epochs=1)
  train.train_and_evaluate(config, str(tmp_path))
  path = tmp_path / "config.json"
  saved = json.load(open(path))
  del saved["data"]["exclude_label"]          # as if written before the field existed
  json.dump(saved, open(path, "w"))
  os.remove(tmp_path / "results.json")
  train.train_and_evaluate(tiny_config(raw_data, tfds_data_dir, training__num_epochs=2), str(tmp_path))
  changed = tiny_config(raw_data, tfds_data_dir, model__latent_dim=3)
  with pytest.raises(train.WorkdirError, match="different model"):
    train.train_and_evaluate(changed, str(tmp_path))


def test_train_on_validation_appends_the_validation_split(raw_data, tfds_data_dir):
  config = tiny_config(raw_data, tfds_data_dir, data__train_subset=0, eval__num_examples=0)
  train_only = splits.load_data(config, "train").images
  validation = splits.load_data(config, "validation")
  config.data.train_on_validation = True
  both = splits.load_data(config, "train")
  assert len(train_only) == 50000 and len(both.images) == 60000 == len(both.labels)
  np.testing.assert_array_equal(both.images[:50000], train_only)
  np.testing.assert_array_equal(both.images[50000:], validation.images)


def test_checkpoints_kept_every_n_steps_restore_the_state_of_that_step(
    raw_data, tfds_data_dir, tmp_path):
  # 16 steps per epoch; keep the newest checkpoint and every multiple of 16.
  config = tiny_config(raw_data, tfds_data_dir, training__num_epochs=3,
                       training__keep_checkpoints=1, training__keep_checkpoints_every_steps=16)
  train.train_and_evaluate(config, str(tmp_path / "long"))
  store = checkpoints_lib.CheckpointStore(str(tmp_path / "long"))
  assert store.steps() == [16, 32, 48]
  model = build.build_model(config)
  target = training.init_state(model, optimizers.make_optimizer(config.optimizer, 48), config.seed)
  kept, meta = store.restore(16, target)
  store.close()
  assert int(kept.step) == 16 and meta["step"] == 16
  # The step-16 checkpoint is the end of a one-epoch run (constant learning rate).
  one_epoch = tiny_config(raw_data, tfds_data_dir, training__num_epochs=1)
  train.train_and_evaluate(one_epoch, str(tmp_path / "short"))
  store = checkpoints_lib.CheckpointStore(str(tmp_path / "short"))
  short, _ = store.restore_latest(target)
  store.close()
  for a, b in zip(jax.tree_util.tree_leaves(kept.params), jax.tree_util.tree_leaves(short.params)):
    np.testing.assert_array_equal(a, b)


# -- paths no test walked before (issue 18, "Tests that would catch the bug") ---------------


def test_dynamic_binarization_the_step_sees_fresh_binary_batches(raw_data, tfds_data_dir, tmp_path,
                                                                 monkeypatch):
  """dynamic_binarized_mnist: every step's batch is 0/1, drawn ~ Bernoulli(intensity), new each step."""
  from vae_jax.datasets import data  # pylint: disable=g-import-not-at-top
  from vae_jax.inference import objectives  # pylint: disable=g-import-not-at-top
  seen, original = [], objectives.batch_loss

  def recording(model, params, batch, key, **kwargs):
    jax.debug.callback(lambda b: seen.append(np.asarray(b)), batch, ordered=True)
    return original(model, params, batch, key, **kwargs)

  monkeypatch.setattr(objectives, "batch_loss", recording)
  # One batch of the same 32 images per epoch (in a new order), 6 epochs: 6 steps.
  config = tiny_config(raw_data, tfds_data_dir, data__name="dynamic_binarized_mnist", data__train_subset=32,
                       training__num_epochs=6, eval__num_examples=100, eval__is_num_samples=0)
  train.train_and_evaluate(config, str(tmp_path))
  intensities = splits.load_data(config, "train").images
  assert len(seen) == 6 and 0 < intensities.mean() and len(np.unique(intensities)) > 100
  by_image = []
  for epoch, batch in enumerate(seen):
    assert batch.shape == (32, 784) and set(np.unique(batch)) == {0.0, 1.0}
    p = intensities[data.epoch_permutation(config.seed, epoch, 32)]
    assert np.all(batch[p == 0] == 0) and np.all(batch[p == 1] == 1)
    grey = (p > 0) & (p < 1)
    assert abs(batch[grey].mean() - p[grey].mean()) < 0.05   # ~3000 grey pixels: sd ≈ 0.009
    by_image.append(batch[np.argsort(data.epoch_permutation(config.seed, epoch, 32))])
  for a, b in zip(by_image, by_image[1:]):   # each image binarised anew at every step
    assert np.all((a != b).sum(axis=1) > 0)


def test_dynamic_binarization_evaluation_splits_are_binary_and_fixed(raw_data, tfds_data_dir):
  config = tiny_config(raw_data, tfds_data_dir, data__name="dynamic_binarized_mnist", eval__num_examples=500)
  grey_config = tiny_config(raw_data, tfds_data_dir, data__name="mnist", eval__num_examples=500)
  for split in ("validation", "test"):
    binary = splits.load_data(config, split).images
    p = splits.load_data(grey_config, split).images
    assert binary.shape == p.shape == (500, 784) and set(np.unique(binary)) == {0.0, 1.0}
    assert np.all(binary[p == 0] == 0) and np.all(binary[p == 1] == 1)
    grey = (p > 0) & (p < 1)
    assert abs(binary[grey].mean() - p[grey].mean()) < 0.02
    # Fixed: the same binary images whatever the run's seed, on every load.
    np.testing.assert_array_equal(binary, splits.load_data(config, split).images)
    config.seed = 5
    np.testing.assert_array_equal(binary, splits.load_data(config, split).images)
    config.seed = 0


def test_kl_warmup_inside_the_step(raw_data, tfds_data_dir, tmp_path):
  """Logged β at step t is β · min(1, (t − 1) / W) (update t uses step count t − 1), and the loss
  the step minimised is −(recon − β_t · kl) with that β."""
  config = tiny_config(raw_data, tfds_data_dir, training__num_epochs=1, objective__beta=0.5,
                       objective__kl_warmup_steps=10, eval__is_num_samples=0)
  train.train_and_evaluate(config, str(tmp_path))
  records = [r for r in map(json.loads, open(tmp_path / "metrics.jsonl")) if r["split"] == "train"]
  assert [r["step"] for r in records] == list(range(1, 17))
  np.testing.assert_allclose([r["beta"] for r in records], [0.5 * min(1.0, (t - 1) / 10) for t in range(1, 17)],
                             rtol=1e-6, atol=1e-7)
  for r in records:
    np.testing.assert_allclose(r["loss"], -(r["recon"] - r["beta"] * r["kl"]), rtol=1e-5)
  assert records[0]["kl"] > 0 and records[0]["loss"] == pytest.approx(-records[0]["recon"], rel=1e-6)


def test_tensorboard_events_hold_every_metrics_record(raw_data, tfds_data_dir, tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  config = tiny_config(raw_data, tfds_data_dir, training__num_epochs=1, training__tensorboard=True)
  train.train_and_evaluate(config, str(tmp_path))
  events = {}
  for path in (tmp_path / "tensorboard").glob("events.out.tfevents.*"):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        events[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
  expected = {}
  for record in map(json.loads, open(tmp_path / "metrics.jsonl")):
    for name, value in record.items():
      if name not in ("step", "split"):
        expected[(f"{record['split']}/{name}", record["step"])] = value
  expected[("test/step", 16)] = 16   # results.json's "step", a scalar like the others
  assert {"train/loss", "validation/neg_elbo", "test/nll"} <= {tag for tag, _ in events}
  assert sorted(events) == sorted(expected)
  for key, value in expected.items():
    assert events[key] == pytest.approx(value, rel=1e-6), key
