"""Applications: AUROC (vs scipy and by hand), anomaly scores, downstream fit, generation, runner."""
import json
import math
import pathlib

from hypothesis import given, settings, strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import stats

from conftest import tiny_config
from vae_jax.applications import anomaly
from vae_jax.applications import compression
from vae_jax.datasets import data
from vae_jax.datasets import splits
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


# -- the runner: every number it writes against an independent recomputation -----------------

OPTIONS = dict(num_examples=40, num_train=300, fit_steps=20, is_num_samples=10, precisions=("2", "float16"))


def _run_app(app, trained, out):
  """Runs `app` on the trained workdir; returns its rows (from <app>.json) and the first 40 test images."""
  from experiments import applications  # pylint: disable=g-import-not-at-top
  options = applications.Options(out=str(out), **OPTIONS)
  returned = applications.run(app, [trained[0]], options, command="python -m experiments.applications test")
  record = json.loads((out / f"{app}.json").read_text())
  assert record["rows"] == json.loads(json.dumps(returned))
  assert record["command"] == "python -m experiments.applications test"
  table = (out / f"{app}.md").read_text()
  assert table.count("\n|") == len(returned) + 2   # header, rule, one line per row
  _, config, _, _, _ = trained
  test = data.load_split(config.data.name, "test", data_dir=config.data.data_dir,
                         raw_data_dir=config.data.raw_data_dir)
  return record["rows"], test.images[:40], test.labels[:40]


def test_compression_rows_match_a_hand_computation(trained, tmp_path):
  _, _, model, params, _ = trained
  rows, images, _ = _run_app("compression", trained, tmp_path)
  assert [r["precision"] for r in rows] == ["2", "float16"]
  d = model.latent_dim
  mu = np.stack([np.asarray(model.encode(params, x)[0]) for x in images])
  for row in rows:
    # The format: 36 header bytes, then ⌈N·d·b/8⌉ bytes of bin indices or N·d float16s.
    payload = math.ceil(40 * d * 2 / 8) if row["precision"] == "2" else 40 * d * 2
    assert row["file_bytes"] == 36 + payload and row["bytes_per_image"] == (36 + payload) / 40
    assert row["bits_per_image"] == (2 * d if row["precision"] == "2" else 16 * d)
    if row["precision"] == "float16":   # reconstructions sigmoid(g(float16(μ(x)))), by hand
      z = jnp.asarray(mu.astype(np.float16).astype(np.float32))
      recon = np.stack([np.asarray(jax.nn.sigmoid(model.decode(params, z_i))) for z_i in z])
    else:
      blob = compression.compress(model, params, images, "2")
      recon = compression.decompress(model, params, blob)
    mse = np.mean((images.astype(np.float64) - recon) ** 2)
    assert row["mse"] == pytest.approx(mse, rel=1e-4)
    assert row["psnr"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-4)
  assert rows[0]["mse"] > rows[1]["mse"]   # 2 bits per dimension lose more than float16
  assert (tmp_path / "compression.png").stat().st_size > 0


def test_anomaly_auroc_matches_mann_whitney_on_the_held_out_digit(trained, tmp_path):
  _, _, model, params, _ = trained
  rows, images, labels = _run_app("anomaly", trained, tmp_path)
  scores = anomaly.scores(model, params, images, jax.random.fold_in(jax.random.PRNGKey(0), 0),
                          num_samples=OPTIONS["is_num_samples"])
  is_one = labels == 1
  assert 0 < is_one.sum() < 40
  assert {r["score"] for r in rows} == {"neg_elbo", "is_nll"}
  for row in rows:
    normal, anomalous = scores[row["score"]][~is_one], scores[row["score"]][is_one]
    u = stats.mannwhitneyu(anomalous, normal, alternative="two-sided").statistic
    assert row["auroc"] == pytest.approx(u / (len(anomalous) * len(normal)), abs=1e-12)
    assert row["anomalies"] == "digit 1"
    assert (row["num_anomaly"], row["num_normal"]) == (int(is_one.sum()), int((~is_one).sum()))
    assert row["mean_anomaly"] == pytest.approx(anomalous.mean(), rel=1e-6)
    assert row["mean_normal"] == pytest.approx(normal.mean(), rel=1e-6)


def test_downstream_accuracy_matches_predictions_counted_by_hand(trained, tmp_path):
  _, config, model, params, _ = trained
  rows, _, _ = _run_app("downstream", trained, tmp_path)
  train_split = data.load_split(config.data.name, "train", data_dir=config.data.data_dir,
                                raw_data_dir=config.data.raw_data_dir)
  test_split = data.load_split(config.data.name, "test", data_dir=config.data.data_dir,
                               raw_data_dir=config.data.raw_data_dir)
  train_x, train_y = train_split.images[:300], train_split.labels[:300]
  test_x, test_y = test_split.images[:40], test_split.labels[:40]
  encode = lambda x: np.stack([np.asarray(model.encode(params, v)[0]) for v in x])  # noqa: E731
  assert [r["features"] for r in rows] == ["pixels", f"VAE μ ({pathlib.Path(trained[0]).name})"]
  for row, (features_train, features_test) in zip(rows, [(train_x, test_x), (encode(train_x), encode(test_x))]):
    classifier, _ = downstream.fit(features_train, train_y, 10, steps=OPTIONS["fit_steps"])
    predictions = np.argmax(np.asarray(downstream.logits(classifier, jnp.asarray(features_test, jnp.float32))), 1)
    assert row["test_accuracy"] == pytest.approx(np.mean(predictions == test_y), abs=1e-6)   # 1/40 apart
    assert row["feature_dim"] == features_train.shape[1]
    assert row["train_set_float32_bytes"] == 300 * features_train.shape[1] * 4
  assert rows[0]["test_accuracy"] > 0.3   # chance is 0.1


def _tile(png, row, col, scale=2, size=28, pad=1):
  """Tile (row, col) of an `image_grid.save_grid` PNG as floats in [0, 1]."""
  pixels = np.asarray(Image.open(png).convert("L"), np.float64)[::scale, ::scale] / 255
  top, left = pad + row * (size + pad), pad + col * (size + pad)
  return pixels[top:top + size, left:left + size].reshape(-1)


def test_generation_grids_show_the_reconstructions_and_activity_by_hand(trained, tmp_path):
  _, _, model, params, _ = trained
  rows, images, _ = _run_app("generation", trained, tmp_path)
  name = pathlib.Path(trained[0]).name
  assert sorted(p.name for p in (tmp_path / "generation").glob("*.png")) == sorted(
      f"{name}_{kind}.png" for kind in ("temperatures", "interpolation_linear", "interpolation_spherical",
                                        "traversal"))
  reconstruct = lambda x: np.asarray(jax.nn.sigmoid(model.decode(params, model.encode(params, x)[0])))  # noqa: E731
  for method in ("linear", "spherical"):   # each row runs from x_i to x_{6+i}: its ends are their reconstructions
    png = tmp_path / "generation" / f"{name}_interpolation_{method}.png"
    for i in range(6):
      np.testing.assert_allclose(_tile(png, i, 0), reconstruct(images[i]), atol=1 / 255)
      np.testing.assert_allclose(_tile(png, i, 9), reconstruct(images[6 + i]), atol=1 / 255)
  mu = np.stack([np.asarray(model.encode(params, x)[0], np.float64) for x in images])
  activity = ((mu - mu.mean(0)) ** 2).mean(0)
  row, = rows
  np.testing.assert_allclose(row["activity"], activity, atol=1e-4)
  assert row["active_units"] == int((activity >= 0.01).sum())
  assert row["traversed_dims"] == [int(j) for j in np.argsort(-activity)[:model.latent_dim]]
