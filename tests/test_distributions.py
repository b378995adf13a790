"""Log densities and the Gaussian KL against scipy (independent computations)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from vae_jax.models import distributions


def _rng(seed=0):
  return np.random.default_rng(seed)


def test_gaussian_log_prob_matches_scipy():
  rng = _rng()
  z, mu = rng.normal(size=(2, 3, 5))
  log_var = rng.normal(size=(3, 5))
  expected = stats.norm.logpdf(z, mu, np.exp(0.5 * log_var)).sum(-1)
  got = distributions.gaussian_log_prob(jnp.asarray(z), jnp.asarray(mu), jnp.asarray(log_var))
  assert got.shape == (3,)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_standard_normal_log_prob_matches_scipy():
  z = _rng(1).normal(size=(4, 6))
  expected = stats.multivariate_normal(np.zeros(6), np.eye(6)).logpdf(z)
  np.testing.assert_allclose(distributions.standard_normal_log_prob(jnp.asarray(z)),
                             expected, rtol=1e-5)


def _kl_by_quadrature(mu, log_var):
  """Σ_j ∫ q_j log(q_j / p) dz by numerical integration, one dimension at a time."""
  total = 0.0
  for m, lv in zip(mu, log_var):
    q = stats.norm(m, np.exp(0.5 * lv))
    integrand = lambda z, q=q: q.pdf(z) * (q.logpdf(z) - stats.norm.logpdf(z))  # noqa: E731
    total += integrate.quad(integrand, m - 30 * np.exp(0.5 * lv), m + 30 * np.exp(0.5 * lv),
                            limit=200)[0]
  return total


def test_kl_matches_quadrature():
  rng = _rng(2)
  mu = rng.normal(size=4) * 2
  log_var = rng.normal(size=4)
  got = distributions.gaussian_kl_to_standard(jnp.asarray(mu), jnp.asarray(log_var))
  np.testing.assert_allclose(got, _kl_by_quadrature(mu, log_var), rtol=1e-5)


def test_kl_matches_monte_carlo():
  rng = _rng(3)
  mu, log_var = rng.normal(size=3), rng.normal(size=3) - 0.5
  samples = stats.norm(mu, np.exp(0.5 * log_var)).rvs(size=(200_000, 3), random_state=rng)
  log_ratio = (stats.norm.logpdf(samples, mu, np.exp(0.5 * log_var))
               - stats.norm.logpdf(samples)).sum(-1)
  stderr = log_ratio.std() / np.sqrt(log_ratio.size)
  got = float(distributions.gaussian_kl_to_standard(jnp.asarray(mu), jnp.asarray(log_var)))
  assert abs(got - log_ratio.mean()) < 4 * stderr


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
  assert float(distributions.gaussian_kl_to_standard(jnp.zeros(3), jnp.zeros(3))) == 0.0
  mu, log_var = _rng(4).normal(size=(2, 10, 3))
  assert np.all(distributions.gaussian_kl_to_standard(jnp.asarray(mu), jnp.asarray(log_var)) > 0)


def test_bernoulli_log_prob_matches_scipy():
  rng = _rng(5)
  logits = rng.normal(size=(3, 7)) * 3
  x = (rng.uniform(size=(3, 7)) < 0.5).astype(np.float64)
  expected = stats.bernoulli.logpmf(x, special.expit(logits)).sum(-1)
  got = distributions.bernoulli_log_prob(jnp.asarray(x), jnp.asarray(logits))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_bernoulli_log_prob_is_finite_for_saturated_logits():
  logits = jnp.array([-200.0, 200.0])
  value = distributions.bernoulli_log_prob(jnp.array([1.0, 0.0]), logits)
  np.testing.assert_allclose(value, -400.0)


CB_LOGITS = [-40.0, -8.0, -1.0, -0.21, -0.19, -1e-3, -1e-7, 0.0, 1e-7, 1e-3, 0.19, 0.21,
             0.5, 3.0, 25.0]


def _cb_normaliser_by_quadrature(logit):
  lam = special.expit(logit)
  integral = integrate.quad(lambda x: lam ** x * (1 - lam) ** (1 - x), 0, 1,
                            epsabs=0, epsrel=1e-12)[0]
  return -np.log(integral)


@pytest.mark.parametrize("logit", CB_LOGITS)
def test_continuous_bernoulli_normaliser_matches_quadrature(logit):
  expected = _cb_normaliser_by_quadrature(logit)
  got32 = distributions.continuous_bernoulli_log_normalizer(jnp.float32(logit))
  assert got32.dtype == jnp.float32
  np.testing.assert_allclose(got32, expected, rtol=2e-6, atol=2e-6)
  with jax.enable_x64(True):
    got64 = distributions.continuous_bernoulli_log_normalizer(jnp.float64(logit))
    np.testing.assert_allclose(got64, expected, rtol=1e-7)  # quad's own accuracy


def test_continuous_bernoulli_density_integrates_to_one_and_mean():
  log_prob = jax.jit(lambda x, logit: distributions.continuous_bernoulli_log_prob(
      x[None], logit[None]))
  for logit in (-5.0, -1e-4, 0.0, 0.15, 2.0):
    density = lambda x, l=logit: float(jnp.exp(log_prob(jnp.float32(x), jnp.float32(l))))  # noqa: E731
    np.testing.assert_allclose(integrate.quad(density, 0, 1)[0], 1.0, rtol=1e-5)
    mean = integrate.quad(lambda x, d=density: x * d(x), 0, 1)[0]
    np.testing.assert_allclose(distributions.continuous_bernoulli_mean(jnp.float32(logit)),
                               mean, atol=2e-6)


def test_continuous_bernoulli_mean_limits():
  means = np.asarray(
      distributions.continuous_bernoulli_mean(jnp.array([-1e4, -0.2, 0.0, 0.2, 1e4])))
  assert np.all(np.diff(means) > 0) and np.all((means > 0) & (means < 1))
  np.testing.assert_allclose(means[[0, 2, 4]], [1e-4, 0.5, 1 - 1e-4], atol=1e-6)


def test_continuous_bernoulli_gradients_are_finite_near_one_half():
  grad = jax.grad(lambda l: jnp.sum(distributions.continuous_bernoulli_log_normalizer(l)
                                    + distributions.continuous_bernoulli_mean(l)))
  g = grad(jnp.array([0.0, 1e-6, -0.1999, 0.2001, 30.0]))
  assert np.all(np.isfinite(g))
  # d/dℓ log C = ℓ/6 + O(ℓ³) and d/dℓ mean = 1/12 + O(ℓ²) near 0.
  np.testing.assert_allclose(g[0], 1 / 12, rtol=1e-6)


def test_log_probs_sum_over_last_axis_only():
  z = jnp.zeros((2, 3, 4))
  assert distributions.gaussian_log_prob(z, z, z).shape == (2, 3)
  assert distributions.bernoulli_log_prob(z, z).shape == (2, 3)
  assert distributions.continuous_bernoulli_log_prob(z, z).shape == (2, 3)
  assert distributions.gaussian_kl_to_standard(z, z).shape == (2, 3)
