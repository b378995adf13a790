"""`train_and_evaluate(config, workdir)`: the training loop around the jitted step.

The loop walks through epochs of the in-memory training split. Epoch e's order
is `data.epoch_permutation(seed, e)` and step t's randomness is
`fold_in(key, t)`, so a run is a deterministic function of its config: the
state at step t does not depend on how often the process was restarted.

Steps are fused in blocks of `training.steps_per_scan` inside one `lax.scan`.
Block boundaries lie at fixed steps (multiples of the block length inside each
epoch, and each epoch's end), checkpoints are written only there (the first
boundary past every `checkpoint_every_steps`, each evaluation, the end), and so
a resumed run executes exactly the same compiled programs on exactly the same
inputs as an uninterrupted one: on CPU its parameters are bit-identical. The
next epoch is shuffled on the host while the last block of an epoch runs.

Workdir layout:
  config.json          the config of the run (a rerun must match its model)
  checkpoints/<step>/  orbax checkpoints (the last `keep_checkpoints`, and every
                       multiple of `keep_checkpoints_every_steps` if set)
  metrics.jsonl        train/validation/test records, TensorBoard in tensorboard/
  images/              reconstruction and sample grids at every evaluation
  results.json         final test metrics (written last: its presence means done)
"""

from __future__ import annotations

import json
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae_jax.run import checkpoints as checkpoints_lib
from vae_jax.datasets import splits
from vae_jax.models import build
from vae_jax import config as config_lib
from vae_jax.datasets import data as data_lib
from vae_jax.inference import evaluation
from vae_jax.plots import image_grid
from vae_jax.run import metrics as metrics_lib
from vae_jax.run import optimizers
from vae_jax.scale import sharding
from vae_jax.run import trackers
from vae_jax.run import training



class TrainingDiverged(RuntimeError):
  """The loss or gradients became NaN/inf under nan_policy="stop"."""


class WorkdirError(RuntimeError):
  """The workdir cannot be used (unwritable, or it holds a different run)."""


def _prepare_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Checks the workdir is writable and holds no run of another config (writes nothing in it)."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_probe_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise WorkdirError(
        f"workdir {workdir} is not writable ({e.strerror}); choose another --workdir"
        " or fix its permissions.") from e
  for name, folder in (("checkpoints", True), ("images", True), ("config.json", False),
                       ("metrics.jsonl", False), ("results.json", False)):
    entry = os.path.join(workdir, name)
    if os.path.exists(entry) and os.path.isdir(entry) != folder:
      raise WorkdirError(f"{entry} is not a {'folder' if folder else 'file'} as a run needs;"
                         " move it away or choose another --workdir.")
  path = os.path.join(workdir, "config.json")
  current = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    try:
      with open(path) as f:
        previous = json.load(f)
      if not isinstance(previous, dict):
        raise ValueError("it holds no JSON object")
    except ValueError as e:
      raise WorkdirError(
          f"{path} is not valid JSON ({e}); delete it to resume this workdir with this config"
          " (the checkpoints' shapes are still checked) or choose another --workdir.") from e
    # Fill fields added to the defaults after that run was written, so that
    # adding a config field never makes old workdirs unresumable.
    filled = config_lib.default_config()
    config_lib.update_from_dict(filled, previous)
    previous = json.loads(filled.to_json_best_effort())
    changed = [k for k in ("data", "model", "objective", "optimizer", "seed")
               if previous.get(k) != current.get(k)]
    batch_changed = previous.get("training", {}).get("batch_size") != current["training"]["batch_size"]
    if changed or batch_changed:
      fields = changed + (["training.batch_size"] if batch_changed else [])
      raise WorkdirError(
          f"workdir {workdir} holds a run with a different {', '.join(fields)};"
          " use a new --workdir, or the config of that run to resume it.")


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes config.json (atomically), once the workdir and its checkpoints passed every check."""
  if jax.process_index() == 0:
    path = os.path.join(workdir, "config.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(json.loads(config.to_json_best_effort()), f, indent=2)
    os.replace(tmp, path)


def _block_length(step: int, steps_per_epoch: int, block: int) -> int:
  """Steps of the block that starts at `step` (blocks never cross an epoch)."""
  offset = step % steps_per_epoch
  return min(block - offset % block, steps_per_epoch - offset)


def write_images(model, params, images, key, path_prefix: str, image_shape) -> None:
  """Reconstruction grid (inputs above reconstructions) and prior samples."""
  inputs = images[:10]
  recon = jax.vmap(model.reconstruct, in_axes=(None, 0))(params, jnp.asarray(inputs))
  image_grid.save_grid(np.concatenate([inputs, np.asarray(recon)]),
                       f"{path_prefix}_reconstructions.png", image_shape)
  if model.stochastic:
    samples = model.sample(params, key, 100)
    image_grid.save_grid(np.asarray(samples), f"{path_prefix}_samples.png", image_shape)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming what is there) and returns the test metrics."""
  config_lib.validate(config)
  workdir = os.fspath(workdir)
  primary = jax.process_index() == 0
  mesh = sharding.make_mesh()  # all devices of all processes; batches split, state replicated
  sharding.check_batch_size(config.training.batch_size, mesh)
  results_path = os.path.join(workdir, "results.json")
  model = build.build_model(config)
  info = data_lib.dataset_info(config.data.name)
  # Every split is read (and its cache checked) before anything is written to the workdir.
  train_images, validation, test = (splits.load_data(config, s).images for s in data_lib.SPLITS)
  steps_per_epoch = data_lib.num_batches(len(train_images), config.training.batch_size)
  total_steps = config.training.num_epochs * steps_per_epoch
  _prepare_workdir(config, workdir)

  optimizer = optimizers.make_optimizer(config.optimizer, total_steps)
  state = sharding.replicate(
      training.state_from_config(config, model, optimizer), mesh)
  store = checkpoints_lib.CheckpointStore(workdir, config.training.keep_checkpoints,
                                          config.training.keep_checkpoints_every_steps)
  restored, _ = store.restore_latest(state)
  if restored is not None:
    state = restored
    logging.info("resuming from step %d", int(state.step))
  _write_config(config, workdir)
  finished = metrics_lib.read_results(results_path, move_damaged=primary)
  if int(state.step) >= total_steps and finished is not None:
    return finished

  step_fn = training.step_fn_from_config(config, model, optimizer)
  train_steps = training.jit_train_steps(step_fn)
  writer = (metrics_lib.MetricsWriter(workdir, int(state.step), config.training.tensorboard,
                                      trackers.from_config(config, workdir))
            if primary else metrics_lib.NullWriter())
  eval_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 2)
  progress = _progress_bar(config, int(state.step), total_steps)

  def shuffled(epoch):
    return sharding.put_epoch(train_images, config.training.batch_size, config.seed, epoch, mesh)

  step = int(state.step)
  epoch_data, epoch_of_data = None, -1
  start = time.time()
  try:
    while step < total_steps:
      epoch = step // steps_per_epoch
      if epoch != epoch_of_data:
        epoch_data, epoch_of_data = shuffled(epoch), epoch
      offset = step % steps_per_epoch
      length = _block_length(step, steps_per_epoch, config.training.steps_per_scan)
      state, measured = train_steps(state, epoch_data[offset:offset + length])
      first, step = step, step + length
      if step < total_steps and step // steps_per_epoch != epoch:
        # Shuffle the next epoch on the host while this block runs (dispatch is asynchronous).
        epoch_of_data = step // steps_per_epoch
        epoch_data = shuffled(epoch_of_data)
      measured = jax.device_get(measured)
      _check_finite(config, measured, first, store)
      log_every = config.training.log_every_steps
      writer.write_many("train", (
          (first + i + 1, {k: v[i] for k, v in measured.items()})
          for i in range(length) if (first + i + 1) % log_every == 0))
      progress.update(length)
      progress.set_postfix(loss=f"{float(measured['loss'][-1]):.2f}", refresh=False)

      evaluate_now = (step % steps_per_epoch == 0
                      and (step // steps_per_epoch) % config.training.eval_every_epochs == 0)
      if evaluate_now:
        scores = evaluation.evaluate(model, training.eval_params(state), validation, jax.random.fold_in(eval_key, step),
                                     batch_size=config.eval.batch_size, mesh=mesh)
        writer.write(step, "validation", dict(scores, epoch=step // steps_per_epoch,
                                              wall_time=time.time() - start))
        if primary and config.eval.write_images:
          write_images(model, sharding.host_copy(training.eval_params(state)), validation, jax.random.fold_in(eval_key, step),
                       os.path.join(workdir, "images", f"epoch{step // steps_per_epoch:04d}"),
                       info.image_shape)
      crossed = step // config.training.checkpoint_every_steps != first // config.training.checkpoint_every_steps
      if crossed or evaluate_now or step == total_steps:
        writer.flush()
        store.save(state, {"epoch": step / steps_per_epoch})
  finally:
    progress.close()
    writer.flush()
  train_wall_time = time.time() - start

  scores = evaluation.evaluate(
      model, training.eval_params(state), test, jax.random.fold_in(eval_key, 2**31 - 1), batch_size=config.eval.batch_size,
      num_samples=(config.eval.is_num_samples or None) if model.stochastic else None,
      chunk_size=config.eval.is_chunk_size, mesh=mesh)
  results = dict(scores, step=step, epochs=config.training.num_epochs,
                 skipped_updates=int(state.skipped), num_test_examples=len(test),
                 train_wall_time_s=train_wall_time)
  writer.write(step, "test", results)
  writer.close()
  if primary:
    if config.eval.write_images:
      write_images(model, sharding.host_copy(training.eval_params(state)), test, eval_key, os.path.join(workdir, "images", "final"),
                   info.image_shape)
    tmp = results_path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(results, f, indent=2)
    os.replace(tmp, results_path)
    if config.eval.write_figures:
      from vae_jax.plots import figures  # pylint: disable=g-import-not-at-top
      figures.write_run_figures(config, model, jax.device_get(training.eval_params(state)),
                                os.path.join(workdir, "figures"), os.path.join(workdir, "metrics.jsonl"))
  store.close()
  return results


def _check_finite(config, measured, first_step: int, store) -> None:
  bad = np.flatnonzero(np.asarray(measured["finite"]) == 0)
  if bad.size and config.training.nan_policy == "stop":
    steps = store.steps()
    raise TrainingDiverged(
        f"the loss or gradients became NaN/inf at step {first_step + int(bad[0]) + 1};"
        f" the last good checkpoint is step {steps[-1] if steps else 'none'} in {store.directory}"
        " (kept); lower the learning rate, clip gradients (optimizer.grad_clip_norm) or set"
        " training.nan_policy=skip.")
  if bad.size:
    logging.warning("skipped %d non-finite updates after step %d", bad.size, first_step)


def _progress_bar(config, initial: int, total: int):
  import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm.tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                   disable=not config.training.progress_bar or jax.process_index() != 0)
