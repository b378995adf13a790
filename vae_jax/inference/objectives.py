"""Training objectives: the ELBO, the k-sample bounds, the deterministic AE loss.

Every objective is written once, for *one* example x and a `jax.random` key,
against the model's chain (`vae_jax.models.vae`): a reparameterised draw
z ~ q(z|x) (`model.sample_latents`), log p(x|z) and log p(z)
(`model.log_p`) and log q(z|x) (`model.log_q`). No objective branches on the
model family. Objectives are quantities to *maximise*; `batch_loss` vmaps
one over a batch and returns −mean(objective) to minimise.

Samples. The k-th latent sample of an example is drawn from fold_in(key, k)
in every estimator here and in `vae_jax.inference.evaluation`. So for one key
the ELBO's sample is the IWAE bound's first sample, the bound with k samples
uses the first k samples of one with k' > k, and the importance-sampled
log-likelihood does not depend on how it is chunked.

Objectives (`objective.name`):

* "elbo": the β-ELBO E_q[log p(x|z)] − β KL(q(z|x) ‖ p(z)) with k samples
  averaged — with k > 1 this is the "VAE with k samples" of the IWAE paper's
  Table 1. The KL is the closed form where the model has one
  (`model.has_analytic_kl`), else the Monte Carlo estimate
  mean_k [log q(z_k|x) − log p(z_k)].
* "iwae": the importance-weighted bound
  L_k = logsumexp_i(log w_i) − log k, log w_i = log p(x, z_i) − log q(z_i|x).
* "ae": the deterministic autoencoder's log p(x | z = f(x)).

Gradient estimators (`objective.estimator`), for the encoder's parameters:

* "reparam": the plain reparameterisation gradient of the objective.
* "stl", sticking the landing (Roeder et al. 2017): log q(z|x) is evaluated
  with stopped parameters, so the encoder gets only the path derivative
  through z; the score term (zero in expectation) is dropped. Unbiased for
  the ELBO, biased for the IWAE bound (Tucker et al. 2019).
* "dreg", doubly reparameterised (Tucker et al. 2019), IWAE only: the
  encoder's gradient Σ_i w̃_i² ∂log w_i/∂z_i ∂z_i/∂φ (w̃ the normalised
  weights) instead of Σ_i w̃_i (…), unbiased, with a variance that does not
  grow with k; the generative parameters keep the IWAE gradient
  Σ_i w̃_i ∇_θ log p(x, z_i). `_doubly_reparameterised` implements it as one
  custom VJP that multiplies the cotangent of each z_i by w̃_i.

STL and DReG need q(z|x) as a density of z (a Gaussian chain); with a flow
posterior, log q is only known along the sampling path and the config is
refused.
"""

from __future__ import annotations

import functools
import math
from numbers import Number
from typing import Callable

import jax
import jax.numpy as jnp

from vae_jax.models import distributions
from vae_jax.models import vae as vae_lib

OBJECTIVES = ("elbo", "iwae", "ae")
ESTIMATORS = ("reparam", "stl", "dreg")


def check_estimator(model: vae_lib.VAE, objective: str, estimator: str) -> None:
  """Raises ValueError (one line, naming the field and the fix) for combinations that make no sense."""
  if estimator not in ESTIMATORS:
    raise ValueError(f"objective.estimator={estimator!r} is unknown; choose one of {', '.join(ESTIMATORS)}.")
  if estimator == "reparam":
    return
  if objective == "ae":
    raise ValueError(f"objective.estimator={estimator!r}: the deterministic autoencoder has no"
                     " q(z|x); use estimator 'reparam'.")
  if estimator == "dreg" and objective != "iwae":
    raise ValueError("objective.estimator='dreg' is the IWAE bound's estimator; set"
                     " objective.name='iwae' or use estimator 'stl' or 'reparam' with the ELBO.")
  if model.flow != "none":
    raise ValueError(f"objective.estimator={estimator!r} needs log q(z|x) at any z, which the"
                     f" {model.flow} flow posterior does not give; use estimator 'reparam'.")


def _check_stochastic(model: vae_lib.VAE, what: str) -> None:
  if not model.stochastic:
    raise ValueError(
        f"{what} needs a VAE (model.stochastic=True); a deterministic autoencoder"
        " is trained with objective 'ae'.")


def _over_samples(fn: Callable, indices: jax.Array):
  """vmap of fn over the sample indices; one index runs fn directly (a size-1 vmap costs layout copies on CPU)."""
  if indices.shape[0] == 1:
    return jax.tree_util.tree_map(lambda value: value[None], fn(indices[0]))
  return jax.vmap(fn)(indices)


def draw_latents(model: vae_lib.VAE, params: dict, stats, key: jax.Array,
                 indices: jax.Array) -> vae_lib.Latents:
  """The reparameterised draws z_k ~ q(z|x), k in `indices`, from fold_in(key, k); leading axis [K]."""
  return _over_samples(lambda k: model.sample_latents(params, stats, jax.random.fold_in(key, k)), indices)


def chain_terms(model: vae_lib.VAE, params: dict, q_params: dict, x: jax.Array, q_stats,
                latents: vae_lib.Latents,
                prior_params: dict | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(log p(x|z_k), log p(z_k), log q(z_k|x)), each [K], of the stacked draws `latents`.

  log q uses `q_params` and `q_stats` (the encoder's statistics): the same
  as params for the reparameterisation gradient, stopped copies for STL/DReG.
  `prior_params` (`model.prior_params(params)`) may be passed in by callers
  that loop, so that a VampPrior encodes its pseudo-inputs once.
  """
  if prior_params is None:
    prior_params = model.prior_params(params)

  def one(latent):
    log_px_given_z, log_pz = model.log_p(params, prior_params, x, latent)
    return log_px_given_z, log_pz, model.log_q(q_params, q_stats, latent)
  if latents.z0.shape[0] == 1:
    return jax.tree_util.tree_map(lambda value: value[None],
                                  one(jax.tree_util.tree_map(lambda v: v[0], latents)))
  return jax.vmap(one)(latents)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _doubly_reparameterised(terms_fn, params, latents, aux):
  return terms_fn(params, latents, aux)


def _dreg_fwd(terms_fn, params, latents, aux):
  out, vjp = jax.vjp(terms_fn, params, latents, aux)
  return out, (out, vjp)


def _dreg_bwd(terms_fn, residuals, cotangents):
  del terms_fn
  (log_px_given_z, log_pz, log_qz), vjp = residuals
  grad_params, grad_latents, grad_aux = vjp(cotangents)
  weights = jax.nn.softmax(log_px_given_z + log_pz - log_qz)      # w̃_i

  def scale(g):
    return g * weights.reshape((-1,) + (1,) * (g.ndim - 1)).astype(g.dtype)
  return grad_params, jax.tree_util.tree_map(scale, grad_latents), grad_aux


_doubly_reparameterised.defvjp(_dreg_fwd, _dreg_bwd)


def sample_terms(model: vae_lib.VAE, params: dict, x: jax.Array, key: jax.Array,
                 indices: jax.Array, estimator: str = "reparam"):
  """(log p(x|z_k), log p(z_k), log q(z_k|x)) [K] and q(z₁|x)'s statistics, for k in `indices`.

  The values are the same for every estimator; their gradients differ (see
  the module docstring). "dreg" is valid only when the terms feed the IWAE
  bound's logsumexp (its cotangents must be −w̃_i up to a common factor).
  """
  stats = model.encode(params, x)
  latents = draw_latents(model, params, stats, key, indices)
  if estimator == "reparam":
    return chain_terms(model, params, params, x, stats, latents), stats
  q_params, q_stats = jax.lax.stop_gradient((params, stats))

  def terms_fn(p, lat, aux):
    return chain_terms(model, p, aux[0], aux[1], aux[2], lat)
  aux = (q_params, x, q_stats)
  if estimator == "stl":
    return terms_fn(params, latents, aux), stats
  return _doubly_reparameterised(terms_fn, params, latents, aux), stats


def importance_log_weights(model: vae_lib.VAE, params: dict, x: jax.Array, key: jax.Array,
                           indices: jax.Array) -> jax.Array:
  """log w_k = log p(x, z_k) − log q(z_k|x) for the samples k in `indices`, [K].

  exp(log w_k) is an unbiased estimate of p(x) for every k.
  """
  (log_px_given_z, log_pz, log_qz), _ = sample_terms(model, params, x, key, indices)
  return log_px_given_z + log_pz - log_qz


def elbo(model: vae_lib.VAE, params: dict, x: jax.Array, key: jax.Array,
         beta: float | jax.Array = 1.0, analytic_kl: bool = True,
         num_samples: int = 1, estimator: str = "reparam") -> tuple[jax.Array, dict]:
  """The (β-)ELBO of one example with `num_samples` samples averaged.

      ELBO(x) = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)) ≤ log p(x),

  and the β-VAE objective E_q[log p(x|z)] − β KL. With num_samples = k this
  is the IWAE paper's "VAE with k samples": the mean of k one-sample ELBOs.

  Args:
    model: the VAE.
    params: its parameters.
    x: one flattened example, [D].
    key: the example's key.
    beta: β ≥ 0, a Python number or a (traced) scalar.
    analytic_kl: the closed-form KL where the model has one
      (`model.has_analytic_kl`) and the estimator is "reparam"; otherwise
      the Monte Carlo estimate from the same samples.
    num_samples: samples of z averaged (a Python int ≥ 1).
    estimator: "reparam" or "stl".

  Returns:
    (objective, metrics): objective = recon − β·kl; metrics = {"recon":
    estimate of E_q[log p(x|z)], "kl": KL estimate, "elbo": recon − kl}.
  """
  _check_stochastic(model, "the ELBO")
  (log_px_given_z, log_pz, log_qz), stats = sample_terms(
      model, params, x, key, jnp.arange(num_samples), estimator)
  recon = jnp.mean(log_px_given_z)
  if analytic_kl and model.has_analytic_kl and estimator == "reparam":
    kl = distributions.gaussian_kl_to_standard(*stats)
  else:
    kl = jnp.mean(log_qz - log_pz)
  return recon - beta * kl, {"recon": recon, "kl": kl, "elbo": recon - kl}


def iwae_bound(model: vae_lib.VAE, params: dict, x: jax.Array, key: jax.Array,
               num_samples: int, estimator: str = "reparam") -> tuple[jax.Array, dict]:
  """The importance-weighted bound of one example (Burda et al. 2016).

      L_k(x) = log (1/k) Σ_{i=1}^k p(x, z_i) / q(z_i|x) = logsumexp_i(log w_i) − log k,

  z_i ~ q(z|x). ELBO = L_1 ≤ L_k ≤ L_{k+1} ≤ log p(x) in expectation; for
  k = 1 the estimate is exactly `elbo(..., analytic_kl=False)` with the same key.

  Returns:
    (bound, metrics): metrics = {"iwae_bound": L_k, "recon": mean_i log p(x|z_i),
    "kl": mean_i [log q(z_i|x) − log p(z_i)], "elbo": recon − kl (an ELBO
    estimate from the same samples)}.
  """
  _check_stochastic(model, "the IWAE bound")
  (log_px_given_z, log_pz, log_qz), _ = sample_terms(
      model, params, x, key, jnp.arange(num_samples), estimator)
  bound = jax.nn.logsumexp(log_px_given_z + log_pz - log_qz) - math.log(num_samples)
  recon = jnp.mean(log_px_given_z)
  kl = jnp.mean(log_qz - log_pz)
  return bound, {"iwae_bound": bound, "recon": recon, "kl": kl, "elbo": recon - kl}


def autoencoder_loss(model: vae_lib.VAE, params: dict,
                     x: jax.Array) -> tuple[jax.Array, dict]:
  """The deterministic autoencoder's objective of one example (Ch. 2): log p(x | z = f(x)).

  For the fixed Gaussian decoder this is, up to a constant and the factor
  1/(2σ²), minus the squared reconstruction error of Ch. 2; for the
  Bernoulli decoder it is minus the binary cross-entropy.

  Returns:
    (objective, metrics): metrics = {"recon": objective, "kl": 0}.
  """
  if model.stochastic:
    raise ValueError(
        "objective 'ae' is the deterministic autoencoder's; set model.stochastic=False"
        " (or train the VAE with 'elbo' or 'iwae').")
  recon = model.log_likelihood(params, x, model.decode(params, model.code(params, x)))
  return recon, {"recon": recon, "kl": jnp.zeros_like(recon)}


def kl_warmup(step: int | jax.Array, warmup_steps: int) -> jax.Array:
  """Linear KL warm-up (β-annealing) multiplier min(1, step / warmup_steps); 1 when warmup_steps == 0."""
  if isinstance(warmup_steps, Number) and warmup_steps < 0:
    raise ValueError(f"warmup_steps must be ≥ 0, got {warmup_steps}.")
  if isinstance(warmup_steps, Number) and warmup_steps == 0:
    return jnp.ones((), jnp.float32)
  fraction = jnp.asarray(step, jnp.float32) / jnp.asarray(warmup_steps, jnp.float32)
  return jnp.clip(fraction, 0.0, 1.0)


def batch_loss(model: vae_lib.VAE, params: dict, batch: jax.Array, key: jax.Array, *,
               objective: str, num_samples: int = 1, beta: float | jax.Array = 1.0,
               estimator: str = "reparam") -> tuple[jax.Array, dict]:
  """The loss −(1/B) Σ_b objective(x_b) of a batch, and batch-mean metrics.

  Example b gets the key `jax.random.split(key, B)[b]`.

  Args:
    model: the VAE spec (static).
    params: its parameters.
    batch: [B, D] flattened examples.
    key: a `jax.random` key for the batch.
    objective: "elbo" (β-ELBO, `num_samples` samples averaged), "iwae" (the
      bound with k = `num_samples`) or "ae" (deterministic AE).
    num_samples: a Python int ≥ 1 (must be 1 for "ae").
    beta: β of the β-ELBO, a Python number ≥ 0 or a traced scalar (it can be
      vmapped over); ignored by "iwae" and "ae".
    estimator: "reparam", "stl" or "dreg" (see `check_estimator`).

  Returns:
    (loss, metrics): batch means of "loss", "recon", "kl", and, except for
    "ae", "elbo" (β = 1), plus "iwae_bound" for "iwae".
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
  check_estimator(model, objective, estimator)
  keys = jax.random.split(key, batch.shape[0])

  def per_example(x, example_key):
    if objective == "elbo":
      return elbo(model, params, x, example_key, beta, num_samples=num_samples, estimator=estimator)
    if objective == "iwae":
      return iwae_bound(model, params, x, example_key, num_samples, estimator)
    return autoencoder_loss(model, params, x)

  values, metrics = jax.vmap(per_example)(batch, keys)
  loss = -jnp.mean(values)
  metrics = {name: jnp.mean(value) for name, value in metrics.items()}
  metrics["loss"] = loss
  return loss, metrics
