"""Checks against independent values where a planted bug went unseen (issue 18, "Tests that would catch the bug").

Each test computes its expected value another way than the code under test:
log p(x) by quadrature, optimizer updates from the textbook formulas, every
shipped config through the CLI's own loader, the evaluate command against the
library call it promises to make.
"""
import glob
import importlib.util
import json
import math
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, tiny_config
from vae_jax import config as config_lib
from vae_jax.datasets import splits
from vae_jax.inference import evaluation
from vae_jax.inference import objectives
from vae_jax.models import build
from vae_jax.models import vae as vae_lib
from vae_jax.run import optimizers
from vae_jax.run import train
from vae_jax.run import workdir as workdir_lib
from vae_jax.scale import sweeps

# -- the bounds against log p(x) by quadrature ----------------------------------------------

# One latent dimension, so that log p(x) = log ∫ N(z; 0, 1) p(x|z) dz is a 1-D integral.
MODEL_1D = vae_lib.VAE(input_shape=(4, 4, 1), hidden_widths=(8,), latent_dim=1, activation="tanh")


@pytest.fixture(scope="module")
def quadrature():
  """(params, x, log p(x), exact ELBO), with every value computed by hand on a fine z grid."""
  params = MODEL_1D.init(jax.random.key(7))
  x = jnp.asarray([1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1], jnp.float32)
  z = np.linspace(-12.0, 12.0, 48_001)
  logits = np.asarray(jax.jit(jax.vmap(lambda v: MODEL_1D.decode(params, v[None])))(jnp.asarray(z, jnp.float32)),
                      np.float64)
  xs = np.asarray(x, np.float64)
  log_sigmoid = lambda t: -np.logaddexp(0.0, -t)  # noqa: E731
  log_px_given_z = (xs * log_sigmoid(logits) + (1 - xs) * log_sigmoid(-logits)).sum(-1)
  log_prior = -0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)
  dz = z[1] - z[0]
  log_px = np.logaddexp.reduce(log_prior + log_px_given_z) + math.log(dz)
  mu, log_var = (float(np.asarray(v)[0]) for v in MODEL_1D.encode(params, x))
  var = math.exp(log_var)
  q = np.exp(-0.5 * (z - mu) ** 2 / var) / math.sqrt(2 * math.pi * var)
  expected_recon = float((q * log_px_given_z).sum() * dz)
  kl = 0.5 * (mu ** 2 + var - 1.0 - log_var)
  return params, x, float(log_px), expected_recon - kl


def test_elbo_matches_its_quadrature_value_in_expectation(quadrature):
  params, x, log_px, exact_elbo = quadrature
  keys = jax.random.split(jax.random.key(0), 20_000)
  values = jax.jit(jax.vmap(lambda k: objectives.elbo(MODEL_1D, params, x, k)[1]["elbo"]))(keys)
  stderr = float(values.std()) / math.sqrt(len(keys))
  assert abs(float(values.mean()) - exact_elbo) < 4 * stderr + 1e-4
  assert log_px - exact_elbo > 0.1   # the posterior is not Gaussian enough for the ELBO to be tight


def test_iwae_bound_rises_towards_log_px_by_quadrature(quadrature):
  """E L_k ≤ log p(x), increasing in k, and close to log p(x) for large k (Burda et al. Thm. 1)."""
  params, x, log_px, exact_elbo = quadrature
  keys = jax.random.split(jax.random.key(1), 2000)
  means = {}
  for k in (1, 5, 50, 500):
    bounds = jax.jit(jax.vmap(lambda key: objectives.iwae_bound(MODEL_1D, params, x, key, k)[0]))(keys)
    stderr = float(bounds.std()) / math.sqrt(len(keys))
    means[k] = float(bounds.mean())
    assert means[k] < log_px + 4 * stderr + 1e-4, k
  assert abs(means[1] - exact_elbo) < 0.05   # L_1 is the ELBO with a sampled KL
  assert means[1] < means[5] < means[50] <= means[500] + 1e-3
  assert log_px - means[500] < 0.02 * (log_px - exact_elbo) + 1e-3


def test_importance_sampled_estimate_equals_log_px_by_quadrature(quadrature):
  params, x, log_px, exact_elbo = quadrature
  keys = jax.random.split(jax.random.key(2), 40)
  estimates = jax.jit(jax.vmap(lambda key: evaluation.log_likelihood_estimate(
      MODEL_1D, params, x, key, num_samples=5000, chunk_size=300)))(keys)   # 17 chunks, the last padded
  stderr = float(estimates.std()) / math.sqrt(len(keys))
  assert abs(float(estimates.mean()) - log_px) < 4 * stderr + 1e-3 < 0.1 * (log_px - exact_elbo)


# -- every optimizer, schedule and clipping against the textbook formulas ---------------------

TOTAL_STEPS = 6


def _rate(opt, t):
  """η at optax's count t = 0, 1, ... (the t-th update), written out."""
  lr, total = opt.learning_rate, TOTAL_STEPS
  if opt.schedule == "constant":
    return lr
  if opt.schedule == "cosine":
    return lr * 0.5 * (1 + math.cos(math.pi * min(t, total) / total))
  if opt.schedule == "exponential":
    return lr * opt.decay_rate ** (t / total)
  warmup = max(opt.warmup_steps, 1)   # warmup_cosine: 0 → lr linearly, then cosine to 0 at `total`
  if t < warmup:
    return lr * t / warmup
  return lr * 0.5 * (1 + math.cos(math.pi * min(t - warmup, total - warmup) / (total - warmup)))


def _by_hand(opt, theta, grads):
  """θ after len(grads) updates of `opt`, in float64 numpy."""
  m, v = np.zeros_like(theta), np.zeros_like(theta)
  for t, g in enumerate(grads):
    norm = np.sqrt((g ** 2).sum())
    if opt.grad_clip_norm > 0 and norm > opt.grad_clip_norm:
      g = g * opt.grad_clip_norm / norm
    eta = _rate(opt, t)
    if opt.name == "sgd":
      step = g
    elif opt.name == "momentum":
      m = g + opt.momentum * m
      step = m
    else:
      m = opt.b1 * m + (1 - opt.b1) * g
      v = opt.b2 * v + (1 - opt.b2) * g ** 2
      m_hat, v_hat = m / (1 - opt.b1 ** (t + 1)), v / (1 - opt.b2 ** (t + 1))
      step = m_hat / (np.sqrt(v_hat) + opt.eps)
      if opt.name == "adamw":
        step = step + opt.weight_decay * theta
    theta = theta - eta * step
  return theta


@pytest.mark.parametrize("clip", [0.0, 0.5])
@pytest.mark.parametrize("schedule", config_lib.SCHEDULES)
@pytest.mark.parametrize("name", config_lib.OPTIMIZERS)
def test_optimizer_updates_match_the_formulas(name, schedule, clip):
  opt = config_lib.default_config().optimizer
  opt.name, opt.schedule, opt.grad_clip_norm = name, schedule, clip
  opt.learning_rate, opt.momentum, opt.b1, opt.b2, opt.eps = 0.1, 0.8, 0.7, 0.95, 1e-3
  opt.weight_decay, opt.decay_rate, opt.warmup_steps = 0.05, 0.3, 2
  rng = np.random.default_rng(0)
  theta0 = rng.normal(size=5)
  grads = [rng.normal(size=5) * s for s in (1.0, 0.2, 3.0, 0.7, 1.5, 0.1)]
  optimizer = optimizers.make_optimizer(opt, TOTAL_STEPS)
  theta = jnp.asarray(theta0, jnp.float32)
  state = optimizer.init(theta)
  for g in grads:
    updates, state = optimizer.update(jnp.asarray(g, jnp.float32), state, theta)
    theta = theta + updates
  np.testing.assert_allclose(theta, _by_hand(opt, theta0, grads), rtol=2e-5, atol=2e-6)


# -- every shipped config, through the loader the commands use -----------------------------------

def _documented_config_arguments():
  """Every `experiments/configs/<file>.py[:arg]` the docs and commands mention, and each file bare."""
  found = {(pathlib.Path(p).name, "") for p in glob.glob(str(REPO / "experiments/configs/*.py"))
           if not pathlib.Path(p).name.startswith(("__", "ablation_common"))}
  sources = [REPO / "README.md", REPO / "BUILD.md", *REPO.glob("experiments/**/*.py"),
             *REPO.glob("experiments/**/*.md"), *REPO.glob("benchmarks/**/*.py")]
  for source in sources:
    for file, arg in re.findall(r"configs/(\w+\.py)(?::([\w=,]+))?", source.read_text(errors="replace")):
      found.add((file, arg))
  return sorted(found)


def _load_config_module(file):
  spec = importlib.util.spec_from_file_location(f"shipped_{file[:-3]}", REPO / "experiments/configs" / file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("file,arg", _documented_config_arguments())
def test_every_shipped_config_loads_validates_and_builds(file, arg):
  assert (REPO / "experiments/configs" / file).exists(), f"the docs name a config that does not exist: {file}"
  module = _load_config_module(file)
  config = module.get_config(arg) if arg else module.get_config()
  config_lib.validate(config)
  model = build.build_model(config)
  assert model.latent_dim == config.model.latent_dim
  if hasattr(module, "get_sweep"):   # every point of the sweep, as experiments.sweep applies it
    points = list(module.get_sweep())
    assert len(points) >= 2 and len(set(sweeps.check_names(points))) == len(points)
    for point in points:
      point_config = sweeps.apply(config, point)
      config_lib.validate(point_config)
      build.build_model(point_config)


def test_the_list_of_shipped_configs_is_complete():
  files = {f for f, _ in _documented_config_arguments()}
  assert {"default.py", "iwae.py", "conv.py", "fashion.py", "autoencoder.py"} <= files
  assert ("iwae.py", "k=5,epochs=350") in _documented_config_arguments()


# -- experiments.evaluate ------------------------------------------------------------------

def test_evaluate_command_reports_what_the_library_computes(raw_data, tfds_data_dir, tmp_path):
  config = tiny_config(raw_data, tfds_data_dir, training__num_epochs=1)
  train.train_and_evaluate(config, str(tmp_path))
  before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
  env = dict(os.environ, VAE_JAX_RAW_DATA_DIR=str(raw_data), TFDS_DATA_DIR=str(tfds_data_dir),
             JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, "-m", "experiments.evaluate", f"--workdir={tmp_path}", "--split=validation",
       "--num_samples=30", "--chunk_size=7", "--num_examples=40", "--batch_size=16"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  printed = json.loads(result.stdout.strip().splitlines()[-1])
  written, = (json.loads(p.read_text()) for p in tmp_path.glob("evaluation_validation_k30_*.json"))
  assert printed == written
  assert written["split"] == "validation" and written["num_samples"] == 30
  # The same numbers from the library: the newest checkpoint, the first 40 validation images,
  # the key the command documents (fold_in(PRNGKey(seed), 3)).
  loaded_config, model, params = workdir_lib.load_trained(str(tmp_path))
  loaded_config.eval.num_examples = 40
  images = splits.load_data(loaded_config, "validation").images
  assert len(images) == 40
  expected = evaluation.evaluate(model, params, images, jax.random.fold_in(jax.random.PRNGKey(config.seed), 3),
                                 batch_size=16, num_samples=30, chunk_size=7)
  for name in ("neg_elbo", "nll", "recon", "kl"):
    np.testing.assert_allclose(written[name], expected[name], rtol=1e-5, err_msg=name)
  # The run's own files are untouched.
  assert {p: p.read_bytes() for p in before} == before
