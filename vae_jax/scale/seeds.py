"""Many runs in one compiled program: the training state vmapped over *members*.

Members are copies of one config that differ only in values which leave every
array shape unchanged, so that they can live side by side on a leading axis:

* `seed`: θ's initialisation, the data order and every sampling draw;
* `objective.beta`: β lives in `TrainState.beta`, a traced value;
* `optimizer.learning_rate` (constant schedule only): η lives in the state of
  `optax.inject_hyperparams` (see `vae_jax.run.optimizers`).

Member i starts from `training.init_state(model, optimizer, seed_i, β_i)` with
η_i written into its optimizer state, and in epoch e takes the batches
`data.epoch_batches(train, B, seed_i, e)`: the order
`data.epoch_permutation(seed_i, e, N)` cut into N // B batches. One epoch of
all members is a single `jax.jit(jax.vmap(lax.scan(step_fn)))` call on the
training images and an index array [members, steps, B]. Each member therefore
computes what a separate `train.train_and_evaluate` run with its values
computes; only the rounding of batched matrix products may differ.

Non-finite updates are dropped per member as in a single run (`skipped`
counts them), but no member stops the others: inspect `skipped` afterwards.

`train_and_evaluate(config, members, workdirs)` is the vmapped counterpart of
`train.train_and_evaluate`: every member writes its own workdir as a separate
run with its values would (config.json, checkpoints, metrics.jsonl, images,
results.json) and resumes from its checkpoints; `experiments/sweep.py
--seeds_together` trains the seeds of a sweep point with it.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Sequence

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vae_jax.models import build
from vae_jax.datasets import splits
from vae_jax import config as config_lib
from vae_jax.datasets import data as data_lib
from vae_jax.inference import evaluation
from vae_jax.run import checkpoints as checkpoints_lib
from vae_jax.run import metrics as metrics_lib
from vae_jax.run import optimizers
from vae_jax.run import train as train_lib
from vae_jax.run import training
from vae_jax.run import workdir as workdir_lib

MEMBER_FIELDS = ("seed", "objective.beta", "optimizer.learning_rate")
MEMBER_AXIS = "members"   # the vmap axis name; build step_fn with member_axis=MEMBER_AXIS


def member_values(config: ml_collections.ConfigDict, members: Sequence[dict]) -> dict:
  """{"seed": [...], "objective.beta": [...], "optimizer.learning_rate": [...]} per member.

  Args:
    config: the shared config.
    members: one dict of overrides per member, keys among `MEMBER_FIELDS`;
      missing keys take the config's value.

  Raises:
    ValueError: an unknown or shape-changing field, no members, or learning
      rates that differ under a non-constant schedule.
  """
  if not members:
    raise ValueError("members is empty; give at least one dict such as {'seed': 0}.")
  for member in members:
    unknown = sorted(set(member) - set(MEMBER_FIELDS))
    if unknown:
      raise ValueError(f"member field(s) {', '.join(unknown)} cannot vary inside one program;"
                       f" vary only {', '.join(MEMBER_FIELDS)} or run a sweep.")
  defaults = {"seed": config.seed, "objective.beta": config.objective.beta,
              "optimizer.learning_rate": config.optimizer.learning_rate}
  values = {field: [m.get(field, default) for m in members] for field, default in defaults.items()}
  if config.optimizer.schedule != "constant" and len(set(values["optimizer.learning_rate"])) > 1:
    raise ValueError(f"optimizer.learning_rate differs between members under optimizer.schedule="
                     f"{config.optimizer.schedule!r}; use schedule=constant or one rate.")
  for i, member in enumerate(members):
    single = ml_collections.ConfigDict(config.to_dict())
    single.update_from_flattened_dict(member)
    try:
      config_lib.validate(single)
    except ValueError as e:
      raise ValueError(f"member {i} {member}: {e}") from None
  return values


def init_states(model, optimizer: optax.GradientTransformation, seeds: Sequence[int],
                betas: Sequence[float], learning_rates: Sequence[float] | None = None,
                ema: bool = False) -> training.TrainState:
  """`training.init_state` of every member, stacked on a leading axis of size len(seeds)."""
  # Not jitted: eager like the single run's `init_state`, so θ_0 is bit-identical.
  states = jax.vmap(lambda seed, beta: training.init_state(model, optimizer, seed, beta, ema=ema))(
      jnp.asarray(seeds, jnp.int32), jnp.asarray(betas, jnp.float32))
  if learning_rates is not None:
    states = states._replace(opt_state=optax.tree_utils.tree_set(
        states.opt_state, learning_rate=jnp.asarray(learning_rates, jnp.float32)))
  return states


def member_indices(seeds: Sequence[int], epoch: int, num_examples: int, batch_size: int) -> np.ndarray:
  """[members, N // B, B] example indices: member i's `data.epoch_batches` order of `epoch`."""
  steps = data_lib.num_batches(num_examples, batch_size)
  return np.stack([data_lib.epoch_permutation(seed, epoch, num_examples)[:steps * batch_size]
                   .reshape(steps, batch_size) for seed in seeds]).astype(np.int32)


def vmap_train_steps(step_fn) -> Any:
  """`(states[M], images[N, D], indices[M, n, B]) -> (states, measurements[M, n])`, one jit.

  Member m scans `step_fn` over the batches images[indices[m, t]]; the
  gathers happen inside the program, so the images are on the device once.
  `step_fn` comes from `training.make_step_fn(..., member_axis=MEMBER_AXIS)`.
  """
  def member(state, images, indices):
    return training.scan_steps(lambda s, batch_indices: step_fn(s, images[batch_indices]))(state, indices)

  return jax.jit(jax.vmap(member, in_axes=(0, None, 0), axis_name=MEMBER_AXIS), donate_argnums=0)


def member_state(states: training.TrainState, i: int) -> training.TrainState:
  """The state of member i (index i of every leaf)."""
  return jax.tree_util.tree_map(lambda leaf: leaf[i], states)


def train(config: ml_collections.ConfigDict, members: Sequence[dict]
          ) -> tuple[training.TrainState, dict]:
  """Trains every member of `config` for `training.num_epochs` epochs in one program.

  Args:
    config: the shared config (data, model, objective, optimizer, batch size).
    members: one override dict per member (see `member_values`).

  Returns:
    (the members' final states, stacked; the train measurements as arrays
    [members, steps], e.g. "loss", "kl", "finite").
  """
  values = member_values(config, members)
  config_lib.validate(config)
  model = build.build_model(config)
  images = splits.load_data(config, "train").images
  steps_per_epoch = data_lib.num_batches(len(images), config.training.batch_size)
  optimizer = optimizers.make_optimizer(
      config.optimizer, config.training.num_epochs * steps_per_epoch)
  learning_rates = values["optimizer.learning_rate"] if config.optimizer.schedule == "constant" else None
  states = init_states(model, optimizer, values["seed"], values["objective.beta"], learning_rates,
                       ema=config.training.ema_decay > 0)
  step_fn = training.step_fn_from_config(config, model, optimizer, member_axis=MEMBER_AXIS)
  train_epoch = vmap_train_steps(step_fn)
  device_images = jax.device_put(images)
  history = []
  for epoch in range(config.training.num_epochs):
    indices = member_indices(values["seed"], epoch, len(images), config.training.batch_size)
    states, measured = train_epoch(states, device_images, indices)
    history.append(jax.device_get(measured))
  measurements = {name: np.concatenate([h[name] for h in history], axis=1) for name in history[0]}
  chex.assert_tree_shape_prefix((states, measurements), (len(members),))   # one row per member
  return states, measurements


def evaluate(config: ml_collections.ConfigDict, states: training.TrainState,
             split: str = "test", num_samples: int | None = None) -> list[dict]:
  """`evaluation.evaluate` of each member on `split`, with key fold_in(member's state key, 2)."""
  model = build.build_model(config)
  images = splits.load_data(config, split).images
  results = []
  for i in range(states.step.shape[0]):
    state = member_state(states, i)
    key = jax.random.fold_in(state.key, 2)
    results.append(evaluation.evaluate(model, training.eval_params(state), images, key,
                                       batch_size=config.eval.batch_size,
                                       num_samples=num_samples,
                                       chunk_size=config.eval.is_chunk_size))
  return results


def _restore(stores, states: training.TrainState, workdirs: Sequence[str]) -> training.TrainState:
  """The members' newest checkpoints stacked (states itself if none has one); all at one step."""
  restored = [store.restore_latest(member_state(states, i))[0] for i, store in enumerate(stores)]
  steps = [None if r is None else int(r.step) for r in restored]
  if len(set(steps)) > 1:
    listed = ", ".join(f"{w} at {s or 0}" for w, s in zip(workdirs, steps))
    raise ValueError(f"the members' runs stopped at different steps ({listed}); train them"
                     " separately (experiments.sweep --noseeds_together) to resume each.")
  if steps[0] is None:
    return states
  return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *restored)


def train_and_evaluate(config: ml_collections.ConfigDict, members: Sequence[dict],
                       workdirs: Sequence[str]) -> list[dict]:
  """Trains the members in one program, each in its workdir as `train.train_and_evaluate` would.

  Member i's workdir receives what a separate run of `config` with member i's
  values writes: config.json, its checkpoints (at the ends of the epochs where
  that run would checkpoint), metrics.jsonl with the same train, validation and
  test records (same evaluation keys), images and results.json, whose
  `train_wall_time_s` is the common wall time of all members and
  `trained_together` their number. Rerunning resumes every member from its
  newest checkpoint (they must stand at the same step).

  Args:
    config: the shared config.
    members: one override dict per member (see `member_values`).
    workdirs: one workdir per member.

  Returns:
    The members' test results (what each results.json holds).
  """
  values = member_values(config, members)
  configs = []
  for member in members:
    member_config = ml_collections.ConfigDict(config.to_dict())
    member_config.update_from_flattened_dict(member)
    configs.append(member_config)
  workdirs = [os.fspath(w) for w in workdirs]
  model = build.build_model(config)
  info = data_lib.dataset_info(config.data.name)
  images = splits.load_data(config, "train").images
  batch_size = config.training.batch_size
  steps_per_epoch = data_lib.num_batches(len(images), batch_size)
  total_steps = config.training.num_epochs * steps_per_epoch
  for member_config, workdir in zip(configs, workdirs):
    workdir_lib.prepare(workdir)
    workdir_lib.changed_fields(workdir_lib.previous_config(workdir), member_config, workdir)
  optimizer = optimizers.make_optimizer(config.optimizer, total_steps)
  learning_rates = values["optimizer.learning_rate"] if config.optimizer.schedule == "constant" else None
  states = init_states(model, optimizer, values["seed"], values["objective.beta"], learning_rates,
                       ema=config.training.ema_decay > 0)
  stores = [checkpoints_lib.CheckpointStore(w, config.training.keep_checkpoints,
                                            config.training.keep_checkpoints_every_steps)
            for w in workdirs]
  states = _restore(stores, states, workdirs)
  for member_config, workdir in zip(configs, workdirs):
    workdir_lib.write_json(os.path.join(workdir, "config.json"), json.loads(member_config.to_json_best_effort()))
  step = int(states.step[0])
  train_epoch = vmap_train_steps(training.step_fn_from_config(config, model, optimizer, member_axis=MEMBER_AXIS))
  writers = [metrics_lib.MetricsWriter(w, step, config.training.tensorboard) for w in workdirs]
  validation = splits.load_data(config, "validation").images
  eval_keys = [jax.random.fold_in(jax.random.PRNGKey(seed), 2) for seed in values["seed"]]
  device_images = jax.device_put(images)
  every = config.training.checkpoint_every_steps
  start = time.time()
  try:
    while step < total_steps:
      epoch, offset = divmod(step, steps_per_epoch)
      indices = member_indices(values["seed"], epoch, len(images), batch_size)[:, offset:]
      states, measured = train_epoch(states, device_images, indices)
      measured = jax.device_get(measured)
      first, step = step, (epoch + 1) * steps_per_epoch
      evaluate_now = (epoch + 1) % config.training.eval_every_epochs == 0
      for i, (member_config, writer) in enumerate(zip(configs, writers)):
        own = {name: array[i] for name, array in measured.items()}
        if member_config.training.nan_policy == "stop":
          train_lib._stop_if_diverged(own, True, first, step - first, stores[i])  # pylint: disable=protected-access
        writer.write_many("train", (
            (t, {name: v[t - first - 1] for name, v in own.items()})
            for t in range(first + 1, step + 1) if t % config.training.log_every_steps == 0))
        if evaluate_now:
          params, key = training.eval_params(member_state(states, i)), jax.random.fold_in(eval_keys[i], step)
          scores = evaluation.evaluate(model, params, validation, key, batch_size=config.eval.batch_size)
          writer.write(step, "validation", dict(scores, epoch=epoch + 1, wall_time=time.time() - start))
          if config.eval.write_images:
            train_lib.write_images(model, jax.device_get(params), validation, key,
                                   os.path.join(workdirs[i], "images", f"epoch{epoch + 1:04d}"),
                                   info.image_shape)
      if step // every != first // every or evaluate_now or step == total_steps:
        for i, (writer, store) in enumerate(zip(writers, stores)):
          writer.flush()
          store.save(member_state(states, i), {"epoch": step / steps_per_epoch})
  finally:
    for writer in writers:
      writer.flush()
  train_wall_time = time.time() - start
  test = splits.load_data(config, "test").images
  all_results = []
  for i, (member_config, workdir, writer) in enumerate(zip(configs, workdirs, writers)):
    state = member_state(states, i)
    scores = evaluation.evaluate(
        model, training.eval_params(state), test, jax.random.fold_in(eval_keys[i], 2**31 - 1),
        batch_size=config.eval.batch_size,
        num_samples=(config.eval.is_num_samples or None) if model.stochastic else None,
        chunk_size=config.eval.is_chunk_size)
    results = dict(scores, step=step, epochs=config.training.num_epochs,
                   skipped_updates=int(state.skipped), num_test_examples=len(test),
                   train_wall_time_s=train_wall_time, trained_together=len(members))
    writer.write(step, "test", results)
    writer.close()
    params = jax.device_get(training.eval_params(state))
    if config.eval.write_images:
      train_lib.write_images(model, params, test, eval_keys[i],
                             os.path.join(workdir, "images", "final"), info.image_shape)
    path = os.path.join(workdir, "results.json")
    with open(path + ".tmp", "w") as f:
      json.dump(results, f, indent=2)
    os.replace(path + ".tmp", path)
    if config.eval.write_figures:
      from vae_jax.plots import figures  # pylint: disable=g-import-not-at-top
      figures.write_run_figures(member_config, model, params, os.path.join(workdir, "figures"),
                                os.path.join(workdir, "metrics.jsonl"))
    stores[i].close()
    all_results.append(results)
  return all_results
