"""Optimizers of Ch. 1.2 (SGD, momentum, Adam, AdamW) built from the config.

The learning rate is injected as a hyperparameter (`optax.inject_hyperparams`),
so it lives in the optimizer state: a vmapped batch of training states can then
carry one learning rate per member (see `vae_jax.scale.seeds`).
"""

from __future__ import annotations

import ml_collections
import optax


def learning_rate_schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """The schedule η_t named by `opt.schedule` (constant, cosine, exponential, warmup_cosine)."""
  lr, total_steps = opt.learning_rate, max(int(total_steps), 1)
  if opt.schedule == "constant":
    return optax.constant_schedule(lr)
  if opt.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, total_steps)
  if opt.schedule == "exponential":
    return optax.exponential_decay(lr, transition_steps=total_steps, decay_rate=opt.decay_rate)
  if opt.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup_steps=max(opt.warmup_steps, 1), decay_steps=total_steps)
  raise ValueError(f"config.optimizer.schedule={opt.schedule!r}: unknown schedule.")


def make_optimizer(opt: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """The optax transformation for `config.optimizer`.

  sgd: θ ← θ − η ∇L;  momentum: heavy ball with coefficient `momentum`;
  adam / adamw: Kingma & Ba with (b1, b2, eps), adamw adding decoupled weight
  decay. `grad_clip_norm` > 0 first rescales the gradient to at most that
  global norm.
  """
  schedule = learning_rate_schedule(opt, total_steps)

  def build(learning_rate):
    if opt.name == "sgd":
      return optax.sgd(learning_rate)
    if opt.name == "momentum":
      return optax.sgd(learning_rate, momentum=opt.momentum)
    if opt.name == "adam":
      return optax.adam(learning_rate, b1=opt.b1, b2=opt.b2, eps=opt.eps)
    if opt.name == "adamw":
      return optax.adamw(learning_rate, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                         weight_decay=opt.weight_decay)
    raise ValueError(f"config.optimizer.name={opt.name!r}: unknown optimizer.")

  # A constant rate is stored as a number in the state (so it can differ
  # between vmapped members); a schedule is re-evaluated from the step count.
  learning_rate = opt.learning_rate if opt.schedule == "constant" else schedule
  optimizer = optax.inject_hyperparams(build)(learning_rate=learning_rate)
  if opt.grad_clip_norm > 0:
    optimizer = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), optimizer)
  return optimizer
