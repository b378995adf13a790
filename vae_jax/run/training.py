"""The training state and the single jit-compiled optax update (Ch. 1.2).

One step is: draw this step's randomness from `fold_in(key, step)`, binarise
the batch if the dataset asks for it, compute the loss and its gradient with
`jax.value_and_grad`, take an optax update, and return the new state with the
step's measurements. The same pure function runs per step under `jax.jit`
(`jit_train_step`) or over a block of steps inside one `lax.scan`
(`jit_train_steps`), and can be vmapped over a batch of states
(`vae_jax.scale.seeds`).

A non-finite loss or gradient never reaches the parameters: the update is
dropped, `skipped` is counted, and the measurement `finite` is 0 so that the
training loop can stop (nan_policy="stop") or go on (nan_policy="skip").

An update can also turn finite inputs into non-finite results (Adam with
b1 = 1, a learning rate or schedule that is NaN/inf, an overflow). Checking
the results before keeping them costs a second pass over the state (1.4-2x
slower steps on CPU, measured), so the default step checks them after the
fact, for free: `finite` is also 0 when the new parameters' norm (a
measurement anyway; one that overflows, |θ| beyond ~1e19, counts as
diverged) is not finite, and the state is then *not* valid: the
caller must discard it (`train.train_and_evaluate` stops, or under
nan_policy="skip" replays that block of steps with `check_results=True`,
which drops an update whose results are not all finite) and should check
`all_finite(state)` before keeping a state (`train` does after every block).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vae_jax.datasets import data as data_lib
from vae_jax.inference import objectives
from vae_jax.models import vae as vae_lib


class TrainState(NamedTuple):
  """Everything a step reads and writes; a pytree that orbax saves as is."""
  step: jax.Array        # int32 scalar: number of updates taken
  params: Any            # {"encoder": θ_f, "decoder": θ_g, ...}
  opt_state: Any         # optax state (holds the learning rate)
  key: jax.Array         # uint32[2] root key of this run; step keys are fold_in(key, step)
  beta: jax.Array        # float32 scalar: β of the β-VAE (a traced value, so it can be vmapped)
  skipped: jax.Array     # int32 scalar: updates dropped for non-finite values
  ema_params: Any = ()   # exponential moving average of params (training.ema_decay > 0), else ()


def eval_params(state: TrainState) -> Any:
  """The parameters to evaluate: the moving average when the state keeps one, else θ."""
  return state.params if isinstance(state.ema_params, tuple) else state.ema_params


def init_state(model: vae_lib.VAE, optimizer: optax.GradientTransformation,
               seed, beta=1.0, ema: bool = False) -> TrainState:
  """The state before the first step: θ from `fold_in(PRNGKey(seed), 0)`; the average starts at θ."""
  root = jax.random.PRNGKey(seed)
  params = model.init(jax.random.fold_in(root, 0))
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
      key=jax.random.fold_in(root, 1), beta=jnp.asarray(beta, jnp.float32),
      skipped=jnp.zeros((), jnp.int32),
      ema_params=jax.tree_util.tree_map(jnp.copy, params) if ema else ())


def make_step_fn(model: vae_lib.VAE, optimizer: optax.GradientTransformation, *,
                 objective: str, num_samples: int = 1, kl_warmup_steps: int = 0,
                 dynamic_binarization: bool = False, member_axis: str | None = None,
                 estimator: str = "reparam", ema_decay: float = 0.0,
                 check_results: bool = False) -> Callable:
  """Returns the pure update `step_fn(state, batch) -> (state, measurements)`.

  Args:
    model: the VAE (or deterministic autoencoder) spec.
    optimizer: an optax transformation.
    objective: "elbo", "iwae" or "ae" (see `objectives.batch_loss`).
    num_samples: k of the IWAE bound.
    kl_warmup_steps: β_t = β · min(1, t / kl_warmup_steps).
    dynamic_binarization: resample x ~ Bernoulli(x) at every step.
    estimator: the encoder's gradient estimator, "reparam", "stl" or "dreg".
    ema_decay: δ of the moving average ema ← δ·ema + (1 − δ)·θ after every
      applied update (`optax.incremental_update`); the state must have been
      made with `init_state(..., ema=True)` when δ > 0.
    member_axis: the `jax.vmap` axis name when many states are stepped at once
      (`vae_jax.scale.seeds`); then the step takes the plain update branch whenever
      every member is finite, and selects per member only when one is not.
      A step built with it must run under a vmap with that axis name.
    check_results: keep the new parameters, optimizer state and average only
      if every leaf is finite (else drop the update as for a non-finite
      gradient); one more pass over the state per step, for replaying a block
      in which a result was non-finite (see the module docstring).
  """

  def loss_fn(params, batch, key, beta):
    return objectives.batch_loss(model, params, batch, key, objective=objective,
                                 num_samples=num_samples, beta=beta, estimator=estimator)

  def step_fn(state: TrainState, batch: jax.Array):
    step_key = jax.random.fold_in(state.key, state.step)
    data_key, loss_key = jax.random.split(step_key)
    if dynamic_binarization:
      batch = data_lib.binarize(data_key, batch)
    beta = state.beta * objectives.kl_warmup(state.step, kl_warmup_steps)
    (loss, measurements), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch, loss_key, beta)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def update(_):
      updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
      ema = state.ema_params
      if ema_decay:
        ema = optax.incremental_update(params, ema, 1.0 - ema_decay)
      return params, opt_state, ema

    old = (state.params, state.opt_state, state.ema_params)

    if check_results:
      new = update(None)   # kept only if finite, and its norm too (as `finish` checks)
      finite = finite & all_finite(new) & jnp.isfinite(optax.global_norm(new[0]))
      params, opt_state, ema = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, old)
      return finish(state, params, opt_state, ema, finite, measurements, grad_norm, beta)

    def update_finite_members(_):
      return jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old), update(None), old)

    # A branch, not a jnp.where over the whole state: measured 1.17-1.26x faster
    # on CPU (benchmarks/results/README.md). Under vmap a per-member predicate
    # would turn the branch into that select, so vmapped members branch on
    # "all members finite" (an unbatched value) and select only when one is not.
    if member_axis is None:
      params, opt_state, ema = jax.lax.cond(finite, update, lambda _: old, None)
    else:
      all_members_finite = jax.lax.psum((~finite).astype(jnp.int32), member_axis) == 0
      params, opt_state, ema = jax.lax.cond(all_members_finite, update, update_finite_members, None)
    return finish(state, params, opt_state, ema, finite, measurements, grad_norm, beta)

  def finish(state, params, opt_state, ema, finite, measurements, grad_norm, beta):
    param_norm = optax.global_norm(params)   # a measurement; not finite if any θ is not
    finite = finite & jnp.isfinite(param_norm)
    new_state = TrainState(
        step=state.step + 1, params=params, opt_state=opt_state, key=state.key,
        beta=state.beta, skipped=state.skipped + (~finite).astype(jnp.int32), ema_params=ema)
    measurements = dict(measurements, grad_norm=grad_norm, param_norm=param_norm,
                        beta=beta, finite=finite.astype(jnp.float32))
    return new_state, measurements

  return step_fn


def all_finite(tree: Any) -> jax.Array:
  """True iff no floating-point leaf of `tree` holds NaN or ±inf."""
  leaves = [x for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves])) if leaves else jnp.array(True)


def step_fn_from_config(config, model: vae_lib.VAE, optimizer: optax.GradientTransformation,
                        member_axis: str | None = None, check_results: bool = False) -> Callable:
  """`make_step_fn` with the objective, estimator, warm-up, binarisation and average of `config`."""
  return make_step_fn(
      model, optimizer, objective=config.objective.name,
      num_samples=config.objective.num_samples,
      kl_warmup_steps=config.objective.kl_warmup_steps,
      dynamic_binarization=data_lib.dataset_info(config.data.name).dynamic_binarization,
      member_axis=member_axis, estimator=config.objective.estimator,
      ema_decay=config.training.ema_decay, check_results=check_results)


def state_from_config(config, model: vae_lib.VAE, optimizer: optax.GradientTransformation,
                      seed=None, beta=None) -> TrainState:
  """`init_state` of `config` (its seed and β unless given, an average if training.ema_decay > 0)."""
  return init_state(model, optimizer, config.seed if seed is None else seed,
                    config.objective.beta if beta is None else beta,
                    ema=config.training.ema_decay > 0)


def jit_train_step(step_fn: Callable) -> Callable:
  """`step_fn` under one `jax.jit`, donating the old state."""
  return jax.jit(step_fn, donate_argnums=0)


def scan_steps(step_fn: Callable) -> Callable:
  """`(state, batches[n, B, D]) -> (state, measurements[n])` as one `lax.scan`."""
  return lambda state, batches: jax.lax.scan(step_fn, state, batches)


def jit_train_steps(step_fn: Callable) -> Callable:
  """`scan_steps` under one `jax.jit`; the data is an argument, never a constant."""
  return jax.jit(scan_steps(step_fn), donate_argnums=0)
