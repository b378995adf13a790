"""Anomaly detection with a VAE's likelihood: −ELBO and IS-NLL as scores.

An image unlike the training data should be improbable under the model, so
each test image x gets two anomaly scores (higher = more anomalous):

* −ELBO(x) = −E_q[log p_θ(x|z)] + KL(q_φ(z|x) ‖ p(z)) (one sample, analytic
  KL; `objectives.elbo`);
* IS-NLL(x) = −log p̂(x), the importance-sampled negative log-likelihood with
  K samples (`evaluation.log_likelihood_estimate`).

A score is judged by the area under the ROC curve, written out as the
Mann–Whitney statistic: for anomalies a_1..a_m and normals n_1..n_k,

    AUROC = (1/mk) Σ_i Σ_j [1(a_i > n_j) + ½ 1(a_i = n_j)] = U / (mk),
    U = R_a − m(m + 1)/2,

where R_a is the sum of the anomalies' ranks among all m + k scores (ties get
their average rank). AUROC = 1: every anomaly scores above every normal image;
0.5: no better than chance.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.inference import evaluation
from vae_jax.inference import objectives
from vae_jax.models import vae as vae_lib


def average_ranks(values) -> np.ndarray:
  """Ranks 1..n of `values` [n], ties given the average of the ranks they span."""
  values = np.asarray(values, np.float64)
  order = np.argsort(values, kind="mergesort")
  sorted_values = values[order]
  # Tie groups: [start, end) runs of equal sorted values; their ranks are start+1..end.
  boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
  starts = np.concatenate([[0], boundaries])
  ends = np.concatenate([boundaries, [len(values)]])
  ranks = np.empty(len(values), np.float64)
  ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
  return ranks


def auroc(anomaly_scores, normal_scores) -> float:
  """AUROC = U / (m k) with U = R_anomalies − m(m+1)/2 (Mann–Whitney)."""
  anomaly_scores = np.asarray(anomaly_scores, np.float64).ravel()
  normal_scores = np.asarray(normal_scores, np.float64).ravel()
  m, k = len(anomaly_scores), len(normal_scores)
  if m == 0 or k == 0:
    raise ValueError(f"AUROC needs anomalies and normal examples, got {m} and {k}.")
  if not (np.all(np.isfinite(anomaly_scores)) and np.all(np.isfinite(normal_scores))):
    raise ValueError("AUROC: the scores hold NaN or inf; check the model.")
  ranks = average_ranks(np.concatenate([anomaly_scores, normal_scores]))
  u = ranks[:m].sum() - m * (m + 1) / 2.0
  return float(u / (m * k))


@functools.partial(jax.jit, static_argnames=("model", "num_samples", "chunk_size"))
def _scores_batch(model, params, batch, start, key, num_samples: int, chunk_size: int):
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, start + jnp.arange(batch.shape[0]))
  split = jax.vmap(jax.random.split)(keys)                        # [B, 2] keys
  _, metrics = jax.vmap(lambda x, k: objectives.elbo(model, params, x, k))(batch, split[:, 0])
  log_px = jax.lax.map(
      lambda args: evaluation.log_likelihood_estimate(model, params, args[0], args[1],
                                                      num_samples, chunk_size),
      (batch, split[:, 1]))
  return -metrics["elbo"], -log_px


def scores(model: vae_lib.VAE, params, images, key: jax.Array, *, num_samples: int = 100,
           batch_size: int = 100, chunk_size: int = 100) -> dict:
  """Per-image anomaly scores {"neg_elbo": [N], "is_nll": [N]} (nats).

  Image n uses fold_in(key, n) whatever the batch size (the last batch is
  padded and the padding dropped).

  Args:
    model: a stochastic VAE.
    params: its parameters.
    images: [N, D] in [0, 1].
    key: a `jax.random` key.
    num_samples: K of the IS-NLL.
    batch_size: images per compiled call.
    chunk_size: samples per chunk of the IS-NLL.
  """
  if not model.stochastic:
    raise ValueError("anomaly scores need a VAE (a deterministic autoencoder has no ELBO).")
  images = np.asarray(images, np.float32)
  chex.assert_shape(images, (None, model.data_dim))
  out = {"neg_elbo": [], "is_nll": []}
  for start in range(0, len(images), batch_size):
    batch = images[start:start + batch_size]
    valid = len(batch)
    batch = np.pad(batch, ((0, batch_size - valid), (0, 0)))
    neg_elbo, is_nll = _scores_batch(model, params, jnp.asarray(batch), jnp.asarray(start),
                                     key, num_samples, min(chunk_size, num_samples))
    out["neg_elbo"].append(np.asarray(neg_elbo)[:valid])
    out["is_nll"].append(np.asarray(is_nll)[:valid])
  return {name: np.concatenate(parts) for name, parts in out.items()}


def evaluate(normal_scores: dict, anomaly_scores: dict) -> dict:
  """AUROC and mean score of normal and anomalous images, per score name."""
  return {name: {"auroc": auroc(anomaly_scores[name], normal_scores[name]),
                 "mean_normal": float(np.mean(normal_scores[name])),
                 "mean_anomaly": float(np.mean(anomaly_scores[name])),
                 "num_normal": len(normal_scores[name]),
                 "num_anomaly": len(anomaly_scores[name])}
          for name in normal_scores}
