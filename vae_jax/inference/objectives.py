"""Training objectives: ELBO, β-VAE, IWAE bound, deterministic AE loss.

Each objective is written for *one* example x and a `jax.random` key, and is
a quantity to *maximise*; `batch_loss` vmaps it over a batch and returns the
loss −mean(objective) to minimise.

Samples. The k-th latent sample of an example is

    z_k = μ(x) + σ(x) ⊙ ε_k,   ε_k ~ N(0, I) drawn from fold_in(key, k),

(`latent_sample`) in every estimator here and in `vae_jax.inference.evaluation`. So for
one key the ELBO's sample is the IWAE bound's first sample, the IWAE bound
with k samples uses the first k samples of the one with k' > k, and the
importance-sampled log-likelihood does not depend on how it is chunked.
"""

from __future__ import annotations

import math
from numbers import Number

import jax
import jax.numpy as jnp

from vae_jax.models import distributions
from vae_jax.models import vae as vae_lib

OBJECTIVES = ("elbo", "iwae", "ae")


def _check_stochastic(model: vae_lib.VAE, what: str) -> None:
  if not model.stochastic:
    raise ValueError(
        f"{what} needs a VAE (model.stochastic=True); a deterministic autoencoder"
        " is trained with objective 'ae'.")


def latent_sample(key: jax.Array, mu: jax.Array, log_var: jax.Array,
                  index: jax.Array | int) -> jax.Array:
  """z_k = μ + σ ⊙ ε_k with ε_k drawn from fold_in(key, k), k = `index`.

  Args:
    key: the example's key.
    mu: μ(x), [d].
    log_var: log σ²(x), [d].
    index: k (an int or a traced integer scalar).

  Returns:
    z_k, [d].
  """
  return vae_lib.VAE.reparameterize(jax.random.fold_in(key, index), mu, log_var)


def _sample_terms(model: vae_lib.VAE, params: dict, x: jax.Array, mu: jax.Array,
                  log_var: jax.Array, key: jax.Array,
                  indices: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(log p_θ(x|z_k), log q_φ(z_k|x) − log p(z_k)) for the samples k in `indices`."""
  def one(index):
    z = latent_sample(key, mu, log_var, index)
    log_px_given_z = model.log_likelihood(params, x, model.decode(params, z))
    log_q_over_p = (distributions.gaussian_log_prob(z, mu, log_var)
                    - distributions.standard_normal_log_prob(z))
    return log_px_given_z, log_q_over_p
  if indices.shape[0] == 1:  # One sample (the ELBO): a size-1 vmap axis costs layout copies on CPU.
    return jax.tree_util.tree_map(lambda value: value[None], one(indices[0]))
  return jax.vmap(one)(indices)


def importance_log_weights(model: vae_lib.VAE, params: dict, x: jax.Array,
                           mu: jax.Array, log_var: jax.Array, key: jax.Array,
                           indices: jax.Array) -> jax.Array:
  """log w_k = log p_θ(x|z_k) − (log q_φ(z_k|x) − log p(z_k)) for the given k.

  Args:
    model: the VAE.
    params: its parameters.
    x: one flattened example, [D].
    mu: μ(x), [d] (from `model.encode`, passed in so that chunked callers
      encode once).
    log_var: log σ²(x), [d].
    key: the example's key.
    indices: the sample indices k, [K] integers.

  Returns:
    [K] log importance weights log p_θ(x, z_k) − log q_φ(z_k|x); their
    exponentials are unbiased estimates of p_θ(x).
  """
  log_px_given_z, log_q_over_p = _sample_terms(model, params, x, mu, log_var, key, indices)
  return log_px_given_z - log_q_over_p


def elbo(model: vae_lib.VAE, params: dict, x: jax.Array, key: jax.Array,
         beta: float | jax.Array = 1.0, analytic_kl: bool = True,
         num_samples: int = 1) -> tuple[jax.Array, dict]:
  """The (β-)ELBO of one example, estimated with z ~ q_φ(z|x).

      ELBO(x) = E_{q_φ(z|x)}[log p_θ(x|z)] − KL(q_φ(z|x) ‖ p(z)) ≤ log p_θ(x),

  and the β-VAE objective E_q[log p_θ(x|z)] − β KL(q ‖ p). The expectation is
  estimated with `num_samples` reparameterised samples z_k (`latent_sample`;
  one by default), the KL either in closed form
  ½ Σ_j (μ_j² + σ_j² − log σ_j² − 1) or, with analytic_kl=False, by the same
  samples: mean_k [log q_φ(z_k|x) − log p(z_k)].

  Args:
    model: the VAE.
    params: its parameters.
    x: one flattened example, [D].
    key: the example's key.
    beta: β ≥ 0, a Python number or a (traced) scalar.
    analytic_kl: closed-form KL (True) or its Monte Carlo estimate (False).
    num_samples: samples of z averaged (a Python int ≥ 1).

  Returns:
    (objective, metrics): objective = recon − β·kl; metrics = {"recon":
    estimate of E_q[log p(x|z)], "kl": KL estimate, "elbo": recon − kl}.
  """
  _check_stochastic(model, "the ELBO")
  mu, log_var = model.encode(params, x)
  log_px_given_z, log_q_over_p = _sample_terms(
      model, params, x, mu, log_var, key, jnp.arange(num_samples))
  recon = jnp.mean(log_px_given_z)
  if analytic_kl:
    kl = distributions.gaussian_kl_to_standard(mu, log_var)
  else:
    kl = jnp.mean(log_q_over_p)
  metrics = {"recon": recon, "kl": kl, "elbo": recon - kl}
  return recon - beta * kl, metrics


def iwae_bound(model: vae_lib.VAE, params: dict, x: jax.Array, key: jax.Array,
               num_samples: int) -> tuple[jax.Array, dict]:
  """The importance-weighted bound of one example (Burda et al. 2016).

      L_k(x) = log (1/k) Σ_{i=1}^k p_θ(x, z_i) / q_φ(z_i|x)
             = logsumexp_i(log w_i) − log k,    z_i ~ q_φ(z|x),

  with log w_i = log p_θ(x|z_i) + log p(z_i) − log q_φ(z_i|x). Then
  ELBO = L_1 ≤ L_k ≤ L_{k+1} ≤ log p_θ(x) in expectation; for k = 1 the
  estimate is exactly `elbo(..., analytic_kl=False)` with the same key.

  Args:
    model: the VAE.
    params: its parameters.
    x: one flattened example, [D].
    key: the example's key.
    num_samples: k (a Python int ≥ 1).

  Returns:
    (bound, metrics): metrics = {"iwae_bound": L_k, "recon": mean_i log p(x|z_i),
    "kl": the analytic KL, "elbo": recon − kl (an ELBO estimate from the same
    samples)}.
  """
  _check_stochastic(model, "the IWAE bound")
  mu, log_var = model.encode(params, x)
  log_px_given_z, log_q_over_p = _sample_terms(
      model, params, x, mu, log_var, key, jnp.arange(num_samples))
  bound = jax.nn.logsumexp(log_px_given_z - log_q_over_p) - math.log(num_samples)
  recon = jnp.mean(log_px_given_z)
  kl = distributions.gaussian_kl_to_standard(mu, log_var)
  return bound, {"iwae_bound": bound, "recon": recon, "kl": kl, "elbo": recon - kl}


def autoencoder_loss(model: vae_lib.VAE, params: dict,
                     x: jax.Array) -> tuple[jax.Array, dict]:
  """The deterministic autoencoder's objective of one example (Ch. 2).

      objective(x) = log p_θ(x | z = f(x)),

  the decoder's log-likelihood at the code f(x) (no sampling, no KL). For the
  fixed Gaussian decoder this is
  −‖x − g(f(x))‖² / (2σ²) − D log σ − (D/2) log 2π, i.e. up to the constant
  and the factor 1/(2σ²) minus the squared reconstruction error of Ch. 2; for
  the Bernoulli decoder it is minus the binary cross-entropy.

  Args:
    model: a VAE spec with stochastic=False.
    params: its parameters.
    x: one flattened example, [D].

  Returns:
    (objective, metrics): metrics = {"recon": objective, "kl": 0} (there is no
    KL term; it is reported as 0 so every objective has the same metrics).
  """
  if model.stochastic:
    raise ValueError(
        "objective 'ae' is the deterministic autoencoder's; set model.stochastic=False"
        " (or train the VAE with 'elbo' or 'iwae').")
  recon = model.log_likelihood(params, x, model.decode(params, model.code(params, x)))
  return recon, {"recon": recon, "kl": jnp.zeros_like(recon)}


def kl_warmup(step: int | jax.Array, warmup_steps: int) -> jax.Array:
  """Linear KL warm-up (β-annealing) multiplier min(1, step / warmup_steps).

  Multiply β by it to anneal the KL term from 0 to β over the first
  `warmup_steps` steps.

  Args:
    step: the training step (an int or a traced integer scalar).
    warmup_steps: the length of the warm-up (a Python int ≥ 0); 0 disables it.

  Returns:
    A float32 scalar in [0, 1]; 1 when warmup_steps == 0.
  """
  if isinstance(warmup_steps, Number) and warmup_steps < 0:
    raise ValueError(f"warmup_steps must be ≥ 0, got {warmup_steps}.")
  if isinstance(warmup_steps, Number) and warmup_steps == 0:
    return jnp.ones((), jnp.float32)
  fraction = jnp.asarray(step, jnp.float32) / jnp.asarray(warmup_steps, jnp.float32)
  return jnp.clip(fraction, 0.0, 1.0)


def batch_loss(model: vae_lib.VAE, params: dict, batch: jax.Array, key: jax.Array, *,
               objective: str, num_samples: int = 1,
               beta: float | jax.Array = 1.0) -> tuple[jax.Array, dict]:
  """The loss −(1/B) Σ_b objective(x_b) of a batch, and batch-mean metrics.

  Example b gets the key `jax.random.split(key, B)[b]`.

  Args:
    model: the VAE spec (static).
    params: its parameters.
    batch: [B, D] flattened examples.
    key: a `jax.random` key for the batch.
    objective: "elbo" (β-ELBO, analytic KL, `num_samples` samples averaged),
      "iwae" (IWAE bound with k = `num_samples`) or "ae" (deterministic AE).
    num_samples: a Python int ≥ 1 (must be 1 for "ae").
    beta: β of the β-ELBO, a Python number ≥ 0 or a traced scalar (it can be
      vmapped over); ignored by "iwae" and "ae".

  Returns:
    (loss, metrics): metrics holds batch means of "loss", "recon", "kl", and,
    except for "ae", "elbo" (β = 1), plus "iwae_bound" for "iwae".

  Raises:
    ValueError: unknown objective, num_samples < 1 (or ≠ 1 for "ae"),
      a negative Python β.
  """
  if objective not in OBJECTIVES:
    raise ValueError(
        f"objective={objective!r} is unknown; choose one of {', '.join(OBJECTIVES)}.")
  if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
    raise ValueError(f"num_samples must be a Python int ≥ 1, got {num_samples!r}.")
  if objective == "ae" and num_samples != 1:
    raise ValueError(
        f"objective 'ae' is deterministic and takes no samples; got num_samples={num_samples}.")
  if isinstance(beta, Number) and beta < 0:
    raise ValueError(f"beta must be ≥ 0, got {beta}.")
  if batch.ndim != 2:
    raise ValueError(f"batch must be [B, D], got shape {batch.shape}.")
  keys = jax.random.split(key, batch.shape[0])

  def per_example(x, example_key):
    if objective == "elbo":
      return elbo(model, params, x, example_key, beta, num_samples=num_samples)
    if objective == "iwae":
      return iwae_bound(model, params, x, example_key, num_samples)
    return autoencoder_loss(model, params, x)

  values, metrics = jax.vmap(per_example)(batch, keys)
  loss = -jnp.mean(values)
  metrics = {name: jnp.mean(value) for name, value in metrics.items()}
  metrics["loss"] = loss
  return loss, metrics
