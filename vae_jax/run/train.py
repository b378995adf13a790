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

After every block the state is checked on the device (`training.all_finite`):
a state holding NaN/inf is never checkpointed, evaluated or returned. Under
nan_policy="stop" the run stops naming the step; under "skip" a block in which
an update made the state non-finite is replayed from a copy of its first state
with a step that checks every result before keeping it (it drops that update,
as it drops one whose loss or gradient is not finite).

One process owns the workdir while it trains (`workdir.owned`, a lock), and
a rerun continues the same run, re-evaluates a finished one, or stops with the
reason (`workdir.rerun_plan`).

Workdir layout:
  .lock                the owner's lock (pid and host of the last owner)
  config.json          the config of the run that produced results.json
  checkpoints/<step>/  orbax checkpoints (the last `keep_checkpoints`, and every
                       multiple of `keep_checkpoints_every_steps` if set)
  metrics.jsonl        train/validation/test records, TensorBoard in tensorboard/
  images/              reconstruction and sample grids at every evaluation
  results.json         final test metrics (written last: its presence means done)
  previous_results/    results.json (and config.json) that a rerun superseded
"""

from __future__ import annotations

import contextlib
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
from vae_jax.run import workdir as workdir_lib


class TrainingDiverged(RuntimeError):
  """The loss, gradients or updated state became NaN/inf under nan_policy="stop"."""


WorkdirError = workdir_lib.WorkdirError


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
  workdir = workdir_lib.resolve(workdir)
  primary = jax.process_index() == 0
  mesh = sharding.make_mesh()  # all devices of all processes; batches split, state replicated
  sharding.check_batch_size(config.training.batch_size, mesh)
  model = build.build_model(config)
  # Every split is read (and its cache checked) before anything is written to the workdir.
  train_images, validation, test = (splits.load_data(config, s).images for s in data_lib.SPLITS)
  steps_per_epoch = data_lib.num_batches(len(train_images), config.training.batch_size)
  total_steps = config.training.num_epochs * steps_per_epoch
  workdir_lib.prepare(workdir)
  with workdir_lib.owned(workdir) if primary else contextlib.nullcontext():
    previous = workdir_lib.previous_config(workdir)
    workdir_lib.changed_fields(previous, config, workdir)   # another run: stop before restoring
    optimizer = optimizers.make_optimizer(config.optimizer, total_steps)
    state = sharding.replicate(
        training.state_from_config(config, model, optimizer), mesh)
    with checkpoints_lib.CheckpointStore(workdir, config.training.keep_checkpoints,
                                         config.training.keep_checkpoints_every_steps) as store:
      restored, _ = store.restore_latest(state)
      if restored is not None:
        state = restored
        logging.info("resuming from step %d", int(state.step))
      plan = workdir_lib.rerun_plan(
          previous, config, step=int(state.step), skipped=int(state.skipped),
          total_steps=total_steps, steps_per_epoch=steps_per_epoch, workdir=workdir)
      results_path = os.path.join(workdir, "results.json")
      earlier = metrics_lib.read_results(results_path, move_damaged=primary)
      if plan == "done" and earlier is not None and previous is not None:
        return earlier
      if os.path.exists(results_path):
        if primary:   # superseded: re-evaluated, trained on, or retrained after a corrupt checkpoint
          doing = {"reevaluate": "re-evaluating the finished run with the new eval settings",
                   "train": "training on"}.get(plan, "evaluating the finished run again")
          print(f"{workdir}: {doing}; the earlier results.json and config.json are in"
                f" {workdir_lib.set_aside(workdir)}.", flush=True)
      if primary:
        workdir_lib.write_json(os.path.join(workdir, "config.json"),
                               json.loads(config.to_json_best_effort()))
      return _train_and_evaluate(
          config, workdir, model, optimizer, state, store, mesh, (train_images, validation, test), steps_per_epoch,
          total_steps, (earlier or {}).get("train_wall_time_s", 0.0) if plan == "reevaluate" else 0.0)


def _train_and_evaluate(config, workdir, model, optimizer, state, store, mesh, images,
                        steps_per_epoch, total_steps, earlier_wall_time) -> dict:
  """The training loop from `state`, then the final evaluation (the workdir is owned)."""
  train_images, validation, test = images
  primary = jax.process_index() == 0
  info = data_lib.dataset_info(config.data.name)
  results_path = os.path.join(workdir, "results.json")
  train_steps = training.jit_train_steps(training.step_fn_from_config(config, model, optimizer))
  checked_steps = None   # compiled when a block must be replayed (nan_policy="skip")
  state_is_finite = jax.jit(training.all_finite)
  skip = config.training.nan_policy == "skip"
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
      block = epoch_data[offset:offset + length]
      first_state = jax.tree_util.tree_map(jnp.copy, state) if skip else None
      state, measured = train_steps(state, block)
      first, step = step, step + length
      if step < total_steps and step // steps_per_epoch != epoch:
        # Shuffle the next epoch on the host while this block runs (dispatch is asynchronous).
        epoch_of_data = step // steps_per_epoch
        epoch_data = shuffled(epoch_of_data)
      measured = jax.device_get(measured)
      finite_state = bool(state_is_finite(state))
      if not skip:
        _stop_if_diverged(measured, finite_state, first, length, store)
      elif not finite_state:   # an update made the state non-finite: replay, dropping it
        if checked_steps is None:
          checked_steps = training.jit_train_steps(
              training.step_fn_from_config(config, model, optimizer, check_results=True))
        state, measured = jax.device_get(checked_steps(first_state, block))
      del first_state
      if not measured["finite"].all():
        logging.warning("skipped %d non-finite updates after step %d",
                        int((measured["finite"] == 0).sum()), first)
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
    train_wall_time = time.time() - start + earlier_wall_time

    scores = evaluation.evaluate(
        model, training.eval_params(state), test, jax.random.fold_in(eval_key, 2**31 - 1), batch_size=config.eval.batch_size,
        num_samples=(config.eval.is_num_samples or None) if model.stochastic else None,
        chunk_size=config.eval.is_chunk_size, mesh=mesh)
    check_finite_scores(scores, "the test evaluation")
    results = dict(scores, step=step, epochs=config.training.num_epochs,
                   skipped_updates=int(state.skipped), num_test_examples=len(test),
                   train_wall_time_s=train_wall_time)
    writer.write(step, "test", results)
  finally:
    progress.close()
    writer.close()
  if primary:
    if config.eval.write_images:
      write_images(model, sharding.host_copy(training.eval_params(state)), test, eval_key, os.path.join(workdir, "images", "final"),
                   info.image_shape)
    workdir_lib.write_json(results_path, results)
    if config.eval.write_figures:
      from vae_jax.plots import figures  # pylint: disable=g-import-not-at-top
      figures.write_run_figures(config, model, jax.device_get(training.eval_params(state)),
                                os.path.join(workdir, "figures"), os.path.join(workdir, "metrics.jsonl"))
  return results


def check_finite_scores(scores: dict, what: str) -> None:
  """Raises TrainingDiverged if a score is NaN/inf (never reported as a result)."""
  bad = sorted(k for k, v in scores.items()
               if isinstance(v, (float, np.floating)) and not np.isfinite(v))
  if bad:
    raise TrainingDiverged(
        f"{what} gave {bad[0]}={scores[bad[0]]} (NaN/inf), not written as a result; the model"
        " or its likelihood is numerically unstable: lower the learning rate, or for"
        " model.likelihood=gaussian_learned bound the scale.")


def _stop_if_diverged(measured, finite_state: bool, first_step: int, length: int, store) -> None:
  """Raises TrainingDiverged naming the first non-finite step of a block (nan_policy="stop")."""
  bad = np.flatnonzero(np.asarray(measured["finite"]) == 0)
  if bad.size or not finite_state:
    steps = store.steps()
    where = (f"at step {first_step + int(bad[0]) + 1}" if bad.size
             else f"in the optimizer state between steps {first_step} and {first_step + length}")
    raise TrainingDiverged(
        f"the loss, gradients or updated parameters became NaN/inf {where};"
        f" the last good checkpoint is step {steps[-1] if steps else 'none'} in {store.directory}"
        " (kept); lower the learning rate, clip gradients (optimizer.grad_clip_norm) or set"
        " training.nan_policy=skip.")


def _progress_bar(config, initial: int, total: int):
  import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm.tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                   disable=not config.training.progress_bar or jax.process_index() != 0)
