"""Learned features for downstream models: a classifier on codes vs on pixels.

Ch. 2's second motivation for an encoder f: fit a machine-learning model on
the codes f(x) ∈ ℝ^d instead of the images x ∈ ℝ^D, which are smaller and
faster to learn from. The downstream model here is multinomial logistic
regression,

    p(y = c | x) = softmax(W^T s(x) + b)_c,   s(x) = (x − m) / s   (standardised),

fitted by minimising the mean cross-entropy plus (λ/2)‖W‖² with full-batch
Adam (optax) for a fixed number of steps inside one jitted `lax.scan`; m and s
are the training features' per-column mean and standard deviation (s floored
at 1e-6 for constant pixels).
"""

from __future__ import annotations

import functools
import time
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax


class Classifier(NamedTuple):
  """A fitted logistic regression: standardisation (mean, scale) and (W, b)."""
  mean: jax.Array      # [F]
  scale: jax.Array     # [F]
  weights: jax.Array   # [F, C]
  bias: jax.Array      # [C]


def logits(classifier: Classifier, features: jax.Array) -> jax.Array:
  """W^T s(x) + b for features [N, F] → [N, C]."""
  standardised = (features - classifier.mean[None]) / classifier.scale[None]
  return standardised @ classifier.weights + classifier.bias[None]


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _fit(features, labels, *, num_classes: int, steps: int, learning_rate: float, l2: float):
  mean = features.mean(axis=0)
  scale = jnp.maximum(features.std(axis=0), 1e-6)
  start = Classifier(mean, scale, jnp.zeros((features.shape[1], num_classes), features.dtype),
                     jnp.zeros((num_classes,), features.dtype))
  optimizer = optax.adam(learning_rate)

  def loss_fn(weights_and_bias):
    weights, bias = weights_and_bias
    out = logits(start._replace(weights=weights, bias=bias), features)
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(out, labels).mean()
    return cross_entropy + 0.5 * l2 * jnp.sum(weights ** 2)

  def step(carry, _):
    weights_and_bias, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(weights_and_bias)
    updates, opt_state = optimizer.update(grads, opt_state)
    return (optax.apply_updates(weights_and_bias, updates), opt_state), loss

  initial = (start.weights, start.bias)
  (final, _), losses = jax.lax.scan(step, (initial, optimizer.init(initial)), None, length=steps)
  return start._replace(weights=final[0], bias=final[1]), losses


def fit(features, labels, num_classes: int, *, steps: int = 500, learning_rate: float = 0.05,
        l2: float = 1e-4) -> tuple[Classifier, dict]:
  """Fits logistic regression on features [N, F] with integer labels [N].

  Returns:
    (classifier, info) with info = {"final_loss", "fit_time_s" (the compiled
    fit, excluding compilation), "compile_time_s"}.
  """
  features = jnp.asarray(features, jnp.float32)
  labels = jnp.asarray(labels, jnp.int32)
  if features.ndim != 2 or labels.shape != (features.shape[0],):
    raise ValueError(f"features must be [N, F] with labels [N]; got {features.shape}"
                     f" and {labels.shape}.")
  hyper = dict(learning_rate=learning_rate, l2=l2)
  start = time.perf_counter()
  compiled = _fit.lower(features, labels, num_classes=num_classes, steps=steps, **hyper).compile()
  compile_time = time.perf_counter() - start
  start = time.perf_counter()
  classifier, losses = jax.block_until_ready(compiled(features, labels, **hyper))
  fit_time = time.perf_counter() - start
  chex.assert_tree_all_finite(classifier)   # a diverged fit is never reported
  return classifier, {"final_loss": float(losses[-1]), "fit_time_s": fit_time,
                      "compile_time_s": compile_time}


def accuracy(classifier: Classifier, features, labels) -> float:
  """Fraction of examples whose arg-max class is the label."""
  predicted = jnp.argmax(logits(classifier, jnp.asarray(features, jnp.float32)), axis=-1)
  return float(jnp.mean(predicted == jnp.asarray(labels)))


def compare(train_features, train_labels, test_features, test_labels, num_classes: int,
            **fit_kwargs) -> dict:
  """Fits on the training features and reports test accuracy, times and sizes.

  Returns:
    {"test_accuracy", "train_accuracy", "fit_time_s", "compile_time_s",
    "final_loss", "feature_dim", "train_set_float32_bytes"}.
  """
  classifier, info = fit(train_features, train_labels, num_classes, **fit_kwargs)
  train_features = np.asarray(train_features, np.float32)
  return dict(info, test_accuracy=accuracy(classifier, test_features, test_labels),
              train_accuracy=accuracy(classifier, train_features, train_labels),
              feature_dim=int(train_features.shape[1]),
              train_set_float32_bytes=int(train_features.nbytes))
