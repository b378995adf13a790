"""Evaluation: the importance-sampled log-likelihood and test-set metrics.

The marginal likelihood p_θ(x) = ∫ p_θ(x|z) p(z) dz is estimated by
importance sampling with the encoder as proposal (Burda et al. 2016, App. D):

    log p̂(x) = log (1/K) Σ_{k=1}^K p_θ(x, z_k) / q_φ(z_k|x)
             = logsumexp_k(log w_k) − log K,       z_k ~ q_φ(z|x),

which is the IWAE bound L_K; E[log p̂(x)] ≤ log p_θ(x), increases with K and
tends to log p_θ(x). K = 5000 is the customary value. The samples are
processed in chunks of C with a running logsumexp, so memory is O(C·D) per
example whatever K is; sample k always uses ε_k from fold_in(key, k)
(`objectives.draw_latents`), so the estimate does not depend on C.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.datasets import data as data_lib
from vae_jax.inference import objectives
from vae_jax.scale import sharding
from vae_jax.models import vae as vae_lib

# `evaluate` runs the importance sampling over at most this many (example,
# sample) pairs at once: with C = 500 that is 32 examples, [32·500, D] logits.
_SAMPLES_PER_STEP = 2 ** 14


def log_likelihood_estimate(model: vae_lib.VAE, params: dict, x: jax.Array,
                            key: jax.Array, num_samples: int = 5000,
                            chunk_size: int = 500, prior_params: dict | None = None) -> jax.Array:
  """log p̂(x) = logsumexp_k(log p(x, z_k) − log q(z_k|x)) − log K for one x.

  The K samples are drawn in ⌈K/C⌉ chunks of C (the last one padded and its
  padding masked out) inside a `lax.scan` that keeps the running logsumexp
  r ← logaddexp(r, logsumexp(chunk)). Works for every model family: the
  weights come from the model's chain (`objectives.chain_terms`).

  Args:
    model: the VAE (stochastic).
    params: its parameters.
    x: one flattened example, [D].
    key: the example's key; sample k uses fold_in(key, k).
    num_samples: K (a Python int ≥ 1).
    chunk_size: C (a Python int ≥ 1; min(C, K) is used).
    prior_params: `model.prior_params(params)`, computed here if not given.

  Returns:
    The scalar estimate log p̂(x) (a lower bound on log p(x) in expectation).
  """
  if not isinstance(num_samples, int) or num_samples < 1:
    raise ValueError(f"num_samples must be a Python int ≥ 1, got {num_samples!r}.")
  if not isinstance(chunk_size, int) or chunk_size < 1:
    raise ValueError(f"chunk_size must be a Python int ≥ 1, got {chunk_size!r}.")
  if not model.stochastic:
    raise ValueError("a deterministic autoencoder (stochastic=False) has no log p(x) estimate.")
  chunk_size = min(chunk_size, num_samples)
  num_chunks = -(-num_samples // chunk_size)
  stats = model.encode(params, x)
  if prior_params is None:
    prior_params = model.prior_params(params)

  def step(running, chunk):
    indices = chunk * chunk_size + jnp.arange(chunk_size)
    latents = objectives.draw_latents(model, params, stats, key, indices)
    log_px_given_z, log_pz, log_qz = objectives.chain_terms(
        model, params, params, x, stats, latents, prior_params)
    log_w = jnp.where(indices < num_samples, log_px_given_z + log_pz - log_qz, -jnp.inf)
    return jnp.logaddexp(running, jax.nn.logsumexp(log_w)), None

  start = jnp.full((), -jnp.inf, stats[0].dtype)
  total, _ = jax.lax.scan(step, start, jnp.arange(num_chunks))
  return total - math.log(num_samples)


@functools.partial(jax.jit, static_argnames=("model", "num_samples", "chunk_size"))
def _evaluate_batch(model: vae_lib.VAE, params: dict, batch: jax.Array, start: jax.Array,
                    key: jax.Array, num_samples: int | None,
                    chunk_size: int) -> dict:
  """Per-example metrics of batch[i], the example number start + i."""
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
      key, start + jnp.arange(batch.shape[0]))
  if not model.stochastic:
    recon, _ = jax.vmap(lambda x: objectives.autoencoder_loss(model, params, x))(batch)
    return {"recon": recon}
  split = jax.vmap(jax.random.split)(keys)                       # [B, 2] keys
  elbo_keys, is_keys = split[:, 0], split[:, 1]
  _, metrics = jax.vmap(lambda x, k: objectives.elbo(model, params, x, k))(batch, elbo_keys)
  out = {"elbo": metrics["elbo"], "recon": metrics["recon"], "kl": metrics["kl"]}
  if num_samples:
    examples_per_step = max(1, _SAMPLES_PER_STEP // min(chunk_size, num_samples))
    prior_params = model.prior_params(params)
    out["log_px"] = jax.lax.map(
        lambda args: log_likelihood_estimate(model, params, args[0], args[1],
                                             num_samples, chunk_size, prior_params),
        (batch, is_keys), batch_size=min(examples_per_step, batch.shape[0]))
  return out


def _mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
  """Mean and standard error std/√N (sample std, ddof=1; 0 for N = 1)."""
  values = np.asarray(values, np.float64)
  stderr = values.std(ddof=1) / math.sqrt(values.size) if values.size > 1 else 0.0
  return float(values.mean()), float(stderr)


def evaluate(model: vae_lib.VAE, params: dict, images: np.ndarray, key: jax.Array, *,
             batch_size: int = 500, num_samples: int | None = None,
             chunk_size: int = 500, mesh=None) -> dict:
  """Test-set metrics of a VAE (or of the deterministic autoencoder).

  The images are processed in batches of `batch_size`; the last batch is
  padded to the same shape and the padding masked out, so the jitted batch
  function is compiled once per (model, batch_size, num_samples, chunk_size).
  Example n uses the key fold_in(key, n) (split into an ELBO key and an
  importance-sampling key), so results do not depend on `batch_size`.

  Args:
    model: the VAE spec.
    params: its parameters.
    images: [N, D] flattened examples (NumPy or JAX).
    key: a `jax.random` key.
    batch_size: examples per compiled call.
    num_samples: K of the importance-sampled log-likelihood; None skips it.
    chunk_size: C, samples per chunk of the log-likelihood estimate.
    mesh: a `sharding.make_mesh()` mesh: each batch is split over its devices
      (the batch size rounded up to a multiple of their number; the padding is
      masked out) and params replicated; every process must call `evaluate`.

  Returns:
    For a VAE: {"neg_elbo": mean −ELBO (one-sample, analytic KL),
    "neg_elbo_stderr", "recon": mean E_q[log p(x|z)] estimate, "kl": mean KL,
    and with num_samples "nll": mean −log p̂(x), "nll_stderr"}; for a
    deterministic AE: {"neg_recon": mean −log p(x|f(x)), "neg_recon_stderr",
    "recon"}. Standard errors are std/√N over the N examples. All values are
    Python floats; "num_examples" gives N.
  """
  images = np.asarray(images)
  if images.ndim != 2 or images.shape[1] != model.data_dim:
    raise ValueError(
        f"images must be [N, {model.data_dim}] (flattened {model.input_shape}),"
        f" got shape {images.shape}.")
  if images.shape[0] == 0:
    raise ValueError("images is empty; there is nothing to evaluate.")
  data_lib.check_images(images, model.data_dim)  # finite, in [0, 1]
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be an int ≥ 1, got {batch_size!r}.")
  if num_samples is not None:
    if not isinstance(num_samples, int) or num_samples < 1:
      raise ValueError(f"num_samples must be None or an int ≥ 1, got {num_samples!r}.")
    if not model.stochastic:
      raise ValueError("num_samples: a deterministic autoencoder has no log p(x) estimate.")
  if not isinstance(chunk_size, int) or chunk_size < 1:
    raise ValueError(f"chunk_size must be an int ≥ 1, got {chunk_size!r}.")

  num_examples = images.shape[0]
  batch_size = min(batch_size, num_examples)
  put, to_host = (lambda b: jnp.asarray(b, jnp.float32)), np.asarray
  if mesh is not None:
    batch_size = -(-batch_size // mesh.devices.size) * mesh.devices.size
    params = sharding.replicate(params, mesh)
    put, to_host = (lambda b: sharding.put_batch(b.astype(np.float32), mesh)), sharding.to_host
  per_example: dict[str, list] = {}
  for start in range(0, num_examples, batch_size):
    batch = images[start:start + batch_size]
    valid = batch.shape[0]
    if valid < batch_size:
      batch = np.concatenate(
          [batch, np.zeros((batch_size - valid, batch.shape[1]), batch.dtype)])
    out = _evaluate_batch(model, params, put(batch),
                          jnp.asarray(start, jnp.int32), key, num_samples, chunk_size)
    for name, value in out.items():
      per_example.setdefault(name, []).append(to_host(value)[:valid])
  values = {name: np.concatenate(parts) for name, parts in per_example.items()}

  result = {"num_examples": num_examples}
  if not model.stochastic:
    result["neg_recon"], result["neg_recon_stderr"] = _mean_and_stderr(-values["recon"])
    result["recon"] = -result["neg_recon"]
    return result
  result["neg_elbo"], result["neg_elbo_stderr"] = _mean_and_stderr(-values["elbo"])
  result["recon"] = float(values["recon"].astype(np.float64).mean())
  result["kl"] = float(values["kl"].astype(np.float64).mean())
  if num_samples:
    result["nll"], result["nll_stderr"] = _mean_and_stderr(-values["log_px"])
  return result
