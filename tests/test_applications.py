"""Applications: AUROC (vs scipy and by hand), anomaly scores, downstream fit, generation, runner."""
import json

from hypothesis import given, settings, strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from conftest import tiny_config
from vae_jax.datasets import splits
from vae_jax.applications import anomaly
from vae_jax.applications import downstream
from vae_jax.applications import generation
from vae_jax.run import train
from vae_jax.run import workdir


@pytest.fixture(scope="module")
def trained(raw_data, tfds_data_dir, tmp_path_factory):
  """A tiny MNIST VAE trained without the digit 1, loaded back from its workdir."""
  path = str(tmp_path_factory.mktemp("applications_run"))
  config = tiny_config(raw_data, tfds_data_dir, data__exclude_label=1, eval__is_num_samples=0)
  train.train_and_evaluate(config, path)
  config, model, params = workdir.load_trained(path)
  test = splits.load_data(config, "test")
  return path, config, model, params, test.images[:100]


# -- AUROC --------------------------------------------------------------------

def test_auroc_known_answers():
  assert anomaly.auroc([5, 6, 7], [1, 2, 3]) == 1.0
  assert anomaly.auroc([1, 2, 3], [5, 6, 7]) == 0.0
  assert anomaly.auroc([4, 4], [4, 4, 4]) == 0.5
  # Pairs (a, n): 0.8 beats all 3; 0.4 beats 0.1, ties 0.4 (½), loses to 0.5: (3 + 1.5) / 6.
  assert anomaly.auroc([0.8, 0.4], [0.5, 0.1, 0.4]) == pytest.approx(0.75)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=30),
       st.lists(st.integers(0, 6), min_size=1, max_size=30))
def test_auroc_matches_scipy_mann_whitney_and_all_pairs(anomalies, normals):
  a, n = np.asarray(anomalies, float), np.asarray(normals, float)
  u = stats.mannwhitneyu(a, n, alternative="two-sided").statistic   # U of the first sample
  pairs = ((a[:, None] > n[None]) + 0.5 * (a[:, None] == n[None])).mean()
  assert anomaly.auroc(a, n) == pytest.approx(u / (len(a) * len(n)))
  assert anomaly.auroc(a, n) == pytest.approx(pairs)
  np.testing.assert_allclose(anomaly.average_ranks(np.concatenate([a, n])),
                             stats.rankdata(np.concatenate([a, n])))


def test_auroc_rejects_empty_and_nan():
  with pytest.raises(ValueError, match="needs anomalies"):
    anomaly.auroc([], [1.0])
  with pytest.raises(ValueError, match="NaN"):
    anomaly.auroc([np.nan], [1.0])


# -- anomaly scores on a trained model -----------------------------------------

def test_held_out_class_is_never_seen(trained):
  _, config, _, _, _ = trained
  for split in ("train", "validation", "test"):
    assert 1 not in splits.load_data(config, split).labels
  from vae_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  bad = config_lib.default_config()
  bad.data.exclude_label = 10
  with pytest.raises(ValueError, match="exclude_label"):
    config_lib.validate(bad)


def test_scores_do_not_depend_on_batch_size_and_noise_is_anomalous(trained):
  _, _, model, params, images = trained
  key = jax.random.PRNGKey(0)
  a = anomaly.scores(model, params, images[:30], key, num_samples=20, batch_size=30, chunk_size=8)
  b = anomaly.scores(model, params, images[:30], key, num_samples=20, batch_size=7, chunk_size=8)
  for name in ("neg_elbo", "is_nll"):
    np.testing.assert_allclose(a[name], b[name], rtol=1e-5)
  # E[−log p̂_K] ≤ E[−ELBO]: the importance-sampled bound is tighter on average.
  assert a["is_nll"].mean() <= a["neg_elbo"].mean()
  # A case with a known answer: uniform noise is far less likely than digits.
  noise = np.random.default_rng(0).uniform(size=(30, 784)).astype(np.float32)
  c = anomaly.scores(model, params, noise, key, num_samples=20)
  result = anomaly.evaluate(a, c)
  assert result["neg_elbo"]["auroc"] == 1.0 and result["is_nll"]["auroc"] == 1.0


# -- downstream ---------------------------------------------------------------

def test_logistic_regression_separates_separable_classes():
  rng = np.random.default_rng(0)
  centres = rng.normal(scale=6.0, size=(3, 5))
  labels = rng.integers(0, 3, size=600)
  features = centres[labels] + rng.normal(size=(600, 5))
  result = downstream.compare(features[:500], labels[:500], features[500:], labels[500:], 3,
                              steps=200)
  assert result["test_accuracy"] >= 0.97 and result["feature_dim"] == 5
  assert result["fit_time_s"] > 0 and result["train_set_float32_bytes"] == 500 * 5 * 4
  classifier, info = downstream.fit(features, labels, 3, steps=200)
  # At the optimum of the regularised loss the gradient vanishes.
  def loss(w, b):
    out = downstream.logits(classifier._replace(weights=w, bias=b), jnp.asarray(features, jnp.float32))
    ce = -jnp.take_along_axis(jax.nn.log_softmax(out), jnp.asarray(labels)[:, None], 1).mean()
    return ce + 0.5 * 1e-4 * jnp.sum(w ** 2)
  grads = jax.grad(loss, argnums=(0, 1))(classifier.weights, classifier.bias)
  assert max(float(jnp.abs(g).max()) for g in grads) < 1e-2
  assert info["final_loss"] == pytest.approx(float(loss(classifier.weights, classifier.bias)), rel=0.05)


# -- generation ---------------------------------------------------------------

def test_interpolations():
  a, b = jnp.array([1.0, 0.0, 0.0]), jnp.array([0.0, 1.0, 0.0])
  path = generation.interpolation_path(a, b, 5, "spherical")
  np.testing.assert_allclose(path[0], a, atol=1e-6)
  np.testing.assert_allclose(path[-1], b, atol=1e-6)
  np.testing.assert_allclose(path[2], (a + b) / np.sqrt(2), atol=1e-6)
  np.testing.assert_allclose(jnp.linalg.norm(path, axis=1), 1.0, atol=1e-6)   # on the great circle
  np.testing.assert_allclose(generation.interpolation_path(a, b, 5, "linear")[2], (a + b) / 2)
  np.testing.assert_allclose(generation.slerp(a, 2 * a, 0.5), 1.5 * a, atol=1e-6)   # parallel: linear
  with pytest.raises(ValueError, match="method"):
    generation.interpolation_path(a, b, 5, "cubic")


def test_generation_grids(trained):
  _, _, model, params, images = trained
  key = jax.random.PRNGKey(3)
  grid = generation.temperature_grid(model, params, key, (0.0, 1.0), num_per_row=4)
  assert grid.shape == (8, 784) and np.ptp(grid[:4], axis=0).max() == 0   # T = 0: all z = 0
  rows = generation.interpolation_grid(model, params, images[:2], images[2:4], 5, "spherical")
  ends = jax.vmap(model.reconstruct, in_axes=(None, 0))(params, images[:4])
  np.testing.assert_allclose(rows[[0, 4, 5, 9]], np.asarray(ends)[[0, 2, 1, 3]], atol=1e-5)
  traversal = generation.traversal_grid(model, params, images[0], [0, 3], np.linspace(-2, 2, 6))
  assert traversal.shape == (12, 784) and 0 <= traversal.min() and traversal.max() <= 1
  assert generation.active_units(np.array([[0.0, 1.0], [0.0, -1.0]])).tolist() == [0.0, 1.0]


# -- the runner ---------------------------------------------------------------

@pytest.mark.parametrize("app", ["compression", "downstream", "anomaly", "generation"])
def test_applications_command_writes_results(trained, tmp_path, app):
  from experiments import applications  # pylint: disable=g-import-not-at-top
  options = applications.Options(out=str(tmp_path), num_examples=40, num_train=300, fit_steps=20,
                                 is_num_samples=10, precisions=("2", "float16"))
  applications.run(app, [trained[0]], options, command="python -m experiments.applications test")
  record = json.loads((tmp_path / f"{app}.json").read_text())
  assert record["rows"] and record["command"].startswith("python -m experiments.applications")
  assert (tmp_path / f"{app}.md").read_text().count("\n|") >= 2
  if app == "compression":
    assert (tmp_path / "compression.png").stat().st_size > 0
    assert [r["bits_per_image"] for r in record["rows"]] == [8, 64]
  if app == "anomaly":
    assert {r["anomalies"] for r in record["rows"]} == {"digit 1"}
    assert all(0.0 <= r["auroc"] <= 1.0 for r in record["rows"])
  if app == "generation":
    assert len(list((tmp_path / "generation").glob("*.png"))) == 4
