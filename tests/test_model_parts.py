"""Model parts against independent implementations: densities, flows, IS estimates, bounds.

Densities are checked against scipy; flow log-determinants against
`jnp.linalg.slogdet` of `jax.jacfwd`; the importance-sampled log p(x) of
every family against log p(x) computed by quadrature over a 1- or
2-dimensional latent space (with the prior and pixel densities from scipy),
and against the closed form of a linear-Gaussian model.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from vae_jax.inference import evaluation
from vae_jax.inference import objectives
from vae_jax.models import flows
from vae_jax.models import gaussian_layers
from vae_jax.models import priors
from vae_jax.models import vae as vae_lib

jax.config.update("jax_enable_x64", False)


def _scipy_mixture_log_prob(z, log_weights, means, log_vars):
  parts = [lw + stats.multivariate_normal(m, np.diag(np.exp(lv))).logpdf(z)
           for lw, m, lv in zip(log_weights, means, log_vars)]
  return special.logsumexp(parts)


def test_gaussian_layer_density_and_samples_match_scipy():
  layer = gaussian_layers.GaussianLayer(5, (4,), 3, "tanh")
  theta = layer.init(jax.random.key(0))
  h = jnp.linspace(-1.0, 1.0, 5)
  mu, log_var = layer.stats(theta, h)
  z = jnp.array([0.3, -1.2, 2.0])
  expected = stats.multivariate_normal(np.asarray(mu), np.diag(np.exp(np.asarray(log_var)))).logpdf(z)
  np.testing.assert_allclose(layer.log_prob((mu, log_var), z), expected, rtol=1e-5)
  sample, log_q = layer.sample_and_log_prob(theta, h, jax.random.key(1))
  np.testing.assert_allclose(log_q, stats.multivariate_normal(
      np.asarray(mu), np.diag(np.exp(np.asarray(log_var)))).logpdf(sample), rtol=1e-5)


def test_mixture_prior_log_prob_and_sampling_match_scipy():
  prior = priors.GaussianMixture(latent_dim=2, num_components=3)
  learned = prior.init(jax.random.key(0))
  learned = dict(learned, logits=jnp.array([0.5, -1.0, 0.2]),
                 log_vars=jnp.array([[0.1, -0.3], [0.5, 0.0], [-1.0, 0.2]]))
  params = prior.prepare(learned)
  for z in (jnp.zeros(2), jnp.array([1.5, -0.7]), jnp.array([-3.0, 2.0])):
    expected = _scipy_mixture_log_prob(np.asarray(z), np.asarray(params["log_weights"]),
                                       np.asarray(params["means"]), np.asarray(params["log_vars"]))
    np.testing.assert_allclose(prior.log_prob(params, z), expected, rtol=1e-5)
  # Samples: the sample mean is the mixture mean within 5 standard errors.
  samples = jax.vmap(lambda k: prior.sample(params, k))(jax.random.split(jax.random.key(2), 20000))
  weights = np.exp(np.asarray(params["log_weights"]))
  mean = weights @ np.asarray(params["means"])
  stderr = np.asarray(samples).std(0) / math.sqrt(20000)
  assert np.all(np.abs(np.asarray(samples).mean(0) - mean) < 5 * stderr)


def test_vampprior_is_the_mean_of_the_encoder_at_the_pseudo_inputs():
  model = vae_lib.VAE(input_shape=(3, 3, 1), hidden_widths=(6,), latent_dim=2, activation="tanh",
                      prior="vampprior", prior_components=4)
  params = model.init(jax.random.key(0))
  # Pseudo-inputs outside [0, 1] act as their clipped values (hardtanh).
  raw = jax.random.uniform(jax.random.key(1), (4, 9), minval=-0.5, maxval=1.5)
  params["prior"] = {"pseudo_inputs": raw}
  prior_params = model.prior_params(params)
  clipped = np.clip(np.asarray(raw), 0.0, 1.0)
  components = [model.encode(params, jnp.asarray(u)) for u in clipped]
  for z in (jnp.zeros(2), jnp.array([0.4, -2.0])):
    expected = _scipy_mixture_log_prob(
        np.asarray(z), np.full(4, -math.log(4)), np.stack([np.asarray(m) for m, _ in components]),
        np.stack([np.asarray(v) for _, v in components]))
    np.testing.assert_allclose(model.prior_part.log_prob(prior_params, z), expected, rtol=1e-5)
  # The prior is learned: its gradient reaches the pseudo-inputs inside [0, 1] and the encoder.
  inside = dict(params, prior={"pseudo_inputs": jnp.full((4, 9), 0.5)})
  grads = jax.grad(lambda p: model.prior_part.log_prob(model.prior_params(p), jnp.ones(2)))(inside)
  assert float(jnp.abs(grads["prior"]["pseudo_inputs"]).sum()) > 0
  assert float(jnp.abs(grads["encoder"][0][0]).sum()) > 0


@pytest.mark.parametrize("flow", [flows.PlanarFlow(3, 4), flows.IAF(3, 3, (8, 8), "tanh"),
                                  flows.IAF(1, 2, (4,), "relu")])
def test_flow_log_determinant_is_that_of_the_jacobian(flow):
  params = flow.init(jax.random.key(0))
  params = jax.tree_util.tree_map(lambda p: p * 30.0, params)   # far from the identity
  for seed in range(3):
    z = jax.random.normal(jax.random.key(seed + 1), (flow.latent_dim,))
    _, log_det = flow.forward(params, z)
    jacobian = jax.jacfwd(lambda v: flow.forward(params, v)[0])(z)
    sign, expected = jnp.linalg.slogdet(jacobian)
    assert float(sign) != 0.0
    np.testing.assert_allclose(log_det, expected, rtol=1e-4, atol=1e-4)


def test_made_is_autoregressive_and_planar_flow_stays_invertible():
  iaf = flows.IAF(5, 1, (12, 12), "relu")
  theta = iaf.init(jax.random.key(0))[0]
  for out in (0, 1):   # m and s
    jacobian = jax.jacfwd(lambda z: iaf.made(theta, z)[out])(jnp.linspace(-1, 1, 5))
    assert np.all(np.triu(np.asarray(jacobian)) == 0)           # output j sees only z_{<j}
    assert np.any(np.tril(np.asarray(jacobian), -1) != 0)
  planar = flows.PlanarFlow(2, 1)
  params = {"u": jnp.array([[-5.0, 3.0]]), "w": jnp.array([[1.0, 0.5]]), "b": jnp.zeros(1)}
  grid = jnp.stack(jnp.meshgrid(jnp.linspace(-4, 4, 41), jnp.linspace(-4, 4, 41)), -1).reshape(-1, 2)
  # u alone would fold the plane (wᵀu = −3.5 < −1); û keeps every Jacobian determinant > 0.
  dets = jax.vmap(lambda z: jnp.linalg.det(jax.jacfwd(lambda v: planar.forward(params, v)[0])(z)))(grid)
  assert float(dets.min()) > 0


# -- log p(x) of every family: the IS estimate against quadrature ------------------------

D = 4
X = jnp.array([1.0, 0.0, 1.0, 1.0])
ONE_LAYER = dict(input_shape=(2, 2, 1), hidden_widths=(3,), latent_dim=1, activation="tanh")
FAMILIES = {
    "gaussian": dict(ONE_LAYER),
    "mixture_prior": dict(ONE_LAYER, prior="mixture", prior_components=3),
    "vampprior": dict(ONE_LAYER, prior="vampprior", prior_components=3),
    "planar_flow": dict(ONE_LAYER, flow="planar", flow_length=3),
    "iaf": dict(ONE_LAYER, flow="iaf", flow_length=2, flow_hidden_widths=(4,)),
    "two_layers": dict(ONE_LAYER, upper_latent_dims=(1,), upper_hidden_widths=(1,)),
    "two_layers_vampprior": dict(ONE_LAYER, upper_latent_dims=(1,), upper_hidden_widths=(1,),
                                 prior="vampprior", prior_components=2),
}


def _family(name):
  model = vae_lib.VAE(**FAMILIES[name])
  params = model.init(jax.random.key(3))
  if "prior" in params and "means" in params["prior"]:
    params["prior"]["means"] = params["prior"]["means"] * 2.0     # well separated components
  # A wide q(z₁|x) (σ ≈ e ≈ 2.7) covers the posterior, so 10⁵ samples pin log p(x) down.
  w, b = params["encoder"][-1]
  params["encoder"][-1] = (w.at[1:].multiply(0.1), b.at[1:].set(2.0))
  return model, params


def _bernoulli_log_prob(x, logits):
  return stats.bernoulli(special.expit(np.asarray(logits, np.float64))).logpmf(np.asarray(x)).sum(-1)


def _prior_log_prob(model, params, z):
  """log p(z_L) from scipy, with the prior's component parameters."""
  if model.prior == "standard_normal":
    return stats.norm.logpdf(z).sum(-1)
  p = jax.tree_util.tree_map(np.asarray, model.prior_params(params))
  return np.array([_scipy_mixture_log_prob(v, p["log_weights"], p["means"], p["log_vars"]) for v in z])


def _exact_log_px(model, params):
  """log ∫ p(x|z₁) p(z) dz by the trapezoidal rule on a grid of z (1-D or 2-D)."""
  grid = np.linspace(-12.0, 12.0, 2401 if not model.upper_latent_dims else 481)
  logits = np.asarray(jax.vmap(lambda z: model.decode(params, z))(jnp.asarray(grid[:, None], jnp.float32)))
  log_px_given_z1 = _bernoulli_log_prob(X, logits)                         # [G]
  if not model.upper_latent_dims:
    log_joint = log_px_given_z1 + _prior_log_prob(model, params, grid[:, None])
    weights = np.full(grid.size, grid[1] - grid[0]); weights[[0, -1]] /= 2
    return special.logsumexp(log_joint, b=weights)
  layer = model.conditional_priors[0]
  mu, log_var = jax.vmap(lambda z2: layer.stats(params["upper"][0]["decoder"], z2))(
      jnp.asarray(grid[:, None], jnp.float32))
  mu, sd = np.asarray(mu)[:, 0], np.exp(0.5 * np.asarray(log_var))[:, 0]
  log_p_z1_given_z2 = stats.norm.logpdf(grid[None, :], mu[:, None], sd[:, None])     # [z2, z1]
  log_joint = (log_px_given_z1[None, :] + log_p_z1_given_z2
               + _prior_log_prob(model, params, grid[:, None])[:, None])
  h = grid[1] - grid[0]
  w = np.full(grid.size, h); w[[0, -1]] /= 2
  return special.logsumexp(log_joint, b=np.outer(w, w))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_importance_sampled_log_likelihood_converges_to_quadrature(family):
  model, params = _family(family)
  exact = _exact_log_px(model, params)
  num = 100000
  log_w = np.asarray(jax.jit(lambda p: objectives.importance_log_weights(
      model, p, X, jax.random.key(5), jnp.arange(num)))(params), np.float64)
  estimate = float(jax.jit(lambda p: evaluation.log_likelihood_estimate(
      model, p, X, jax.random.key(5), num, 7000))(params))
  np.testing.assert_allclose(estimate, special.logsumexp(log_w) - math.log(num), atol=1e-4)
  weights = np.exp(log_w - log_w.max())
  stderr = weights.std() / weights.mean() / math.sqrt(num)        # delta method on log p̂
  assert stderr < 0.05
  assert abs(estimate - exact) < 5 * stderr + 1e-3, (estimate, exact, stderr)


def test_importance_sampled_log_likelihood_of_a_linear_gaussian_model_is_its_closed_form():
  # No hidden layer: x = W z + b + σ ε, so p(x) = N(b, W Wᵀ + σ² I) exactly.
  model = vae_lib.VAE(input_shape=(3, 1, 1), hidden_widths=(), latent_dim=2, likelihood="gaussian",
                      gaussian_scale=0.7)
  params = model.init(jax.random.key(0))
  (w, b), = params["decoder"]
  x = jnp.array([0.3, -0.5, 1.2])
  covariance = np.asarray(w) @ np.asarray(w).T + 0.49 * np.eye(3)
  exact = stats.multivariate_normal(np.asarray(b), covariance).logpdf(np.asarray(x))
  log_w = np.asarray(objectives.importance_log_weights(model, params, x, jax.random.key(1),
                                                       jnp.arange(50000)), np.float64)
  estimate = special.logsumexp(log_w) - math.log(50000)
  weights = np.exp(log_w - log_w.max())
  stderr = weights.std() / weights.mean() / math.sqrt(50000)
  assert abs(estimate - exact) < 5 * stderr + 1e-3, (estimate, exact, stderr)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_k_sample_bounds_increase_with_k_and_k1_is_the_elbo(family):
  model, params = _family(family)
  keys = jax.random.split(jax.random.key(7), 2000)

  @jax.jit
  def bounds(params):
    def one(key):
      values = [objectives.iwae_bound(model, params, X, key, k)[0] for k in (1, 5, 50)]
      elbo, _ = objectives.elbo(model, params, X, key, analytic_kl=False)
      return jnp.stack(values), elbo
    return jax.vmap(one)(keys)

  values, elbo = bounds(params)
  np.testing.assert_allclose(values[:, 0], elbo, rtol=1e-5, atol=1e-5)
  for lower, upper in ((0, 1), (1, 2)):
    gain = np.asarray(values[:, upper] - values[:, lower], np.float64)
    assert gain.mean() > 3 * gain.std() / math.sqrt(gain.size), (family, lower, upper)


def test_vae_with_k_samples_is_the_mean_of_k_one_sample_elbos():
  model, params = _family("two_layers")
  key = jax.random.key(0)
  value, _ = objectives.elbo(model, params, X, key, num_samples=5)
  singles = []
  for k in range(5):   # sample k of the k-sample ELBO is drawn from fold_in(key, k)
    (log_px, log_pz, log_qz), _ = objectives.sample_terms(model, params, X, key, jnp.array([k]))
    singles.append(float(log_px[0] + log_pz[0] - log_qz[0]))
  np.testing.assert_allclose(value, np.mean(singles), rtol=1e-5)


@pytest.mark.parametrize("fields, message", [
    (dict(prior="vampprior", prior_components=0), r"model\.prior_components=0.*K ≥ 1"),
    (dict(prior="student"), r"model\.prior='student' is unknown"),
    (dict(flow="iaf", flow_length=0), r"model\.flow_length=0.*≥ 1 steps"),
    (dict(flow="iaf", flow_length=2, stochastic=False), r"model\.flow='iaf'.*deterministic autoencoder"),
    (dict(upper_latent_dims=(1,), upper_hidden_widths=(3,)), r"Lemma 2\.1\.1"),
])
def test_bad_families_are_refused_in_one_line(fields, message):
  with pytest.raises(ValueError, match=message) as error:
    vae_lib.VAE(**dict(ONE_LAYER, latent_dim=2, **fields))
  assert "\n" not in str(error.value)


@pytest.mark.parametrize("objective, estimator, flow, message", [
    ("elbo", "dreg", "none", r"objective\.estimator='dreg' is the IWAE bound's estimator"),
    ("iwae", "stl", "iaf", r"objective\.estimator='stl' needs log q\(z\|x\) at any z"),
    ("ae", "stl", "none", r"deterministic autoencoder has no q\(z\|x\)"),
    ("iwae", "score", "none", r"objective\.estimator='score' is unknown"),
])
def test_estimators_that_do_not_fit_are_refused(objective, estimator, flow, message):
  model = vae_lib.VAE(**dict(ONE_LAYER, latent_dim=2, flow=flow, flow_length=2 if flow != "none" else 0,
                             stochastic=objective != "ae"))
  with pytest.raises(ValueError, match=message):
    objectives.check_estimator(model, objective, estimator)
