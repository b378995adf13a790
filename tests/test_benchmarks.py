"""The benchmark suite's pieces: FLOP count, report, and the PyTorch reference = vae_jax's model."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import jax_steps
from benchmarks import report
from benchmarks import timing
from vae_jax.inference import objectives
from vae_jax.models import build
from vae_jax.models import vae as vae_lib


TORCH_MISSING = "torch is not installed: pip install -e '.[bench]' (torch==2.13.0) to test the PyTorch reference"


def _torch():
  return pytest.importorskip("torch", reason=TORCH_MISSING)


def test_flops_count_every_layer_of_encoder_and_decoder():
  # 784-200-200-50: encoder 784·200 + 200·200 + 200·100, decoder 50·200 + 200·200 + 200·784.
  encoder, decoder = 784 * 200 + 200 * 200 + 200 * 100, 50 * 200 + 200 * 200 + 200 * 784
  assert jax_steps.step_flops(jax_steps.CASES[0]) == 3 * 2 * 20 * (encoder + decoder)
  # IWAE k=5: the encoder once per example, the decoder once per sample.
  assert jax_steps.step_flops(jax_steps.FAMILY_CASES[1]) == 3 * 2 * 20 * (encoder + 5 * decoder)
  # Two layers: q(z₁|x) 784-100-100-200 once; p(x|z₁) 100-100-100-784, q(z₂|z₁) 100-50-50-100 and
  # p(z₁|z₂) 50-50-50-200 per sample.
  once = 784 * 100 + 100 * 100 + 100 * 200
  per_sample = (100 * 100 + 100 * 100 + 100 * 784) + (100 * 50 + 50 * 50 + 50 * 100) + (
      50 * 50 + 50 * 50 + 50 * 200)
  assert jax_steps.step_flops(jax_steps.FAMILY_CASES[0]) == 3 * 2 * 20 * (once + per_sample)
  assert jax_steps.is_nll_flops(jax_steps.FAMILY_CASES[0], 10) == 2 * 10 * (once + 5001 * per_sample)


def test_pair_ratios_pair_round_by_round():
  assert timing.pair_ratios([2.0, 9.0, 4.0], [1.0, 3.0, 4.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}


def _fake_results(fused_s, torch_s, cases=jax_steps.CASES, nproc=2, is_s=(400.0, 400.0)):
  training = {}
  for case in cases:
    training[case.name] = {"num_steps": 10, "batch_size": case.batch_size, "num_samples": 1,
                           "step_gflop": 1.0, "peak_gflops": [100.0] * 2,
                           "seconds": {"vae_jax fused": fused_s, "torch eager1": torch_s}}
  one_layer = jax_steps.CASES[0].name.split(",")[0]
  return {
      "machine": dict(timing.machine(), load_average_end=[0, 0, 0], nproc=nproc), "command": "x",
      "xla_flags_env": "", "matmul_peak": {"gflops": 100.0, "size": 8,
                                           "per_size": {8: timing.summary([1.0])}},
      "training": training, "xla_flags": {},
      "is_nll": {one_layer: {"images": 10, "seconds": [1.0], "extrapolated_s": [is_s[0]],
                             "gflop_10000": 4000.0},
                 jax_steps.TWO_LAYERS: {"images": 10, "seconds": [1.0], "extrapolated_s": [is_s[1]],
                                        "gflop_10000": 2000.0}},
      "default_run": {"compile": {"total_s": 3.0, "trace_lower_s": 1.0, "compile_s": 2.0,
                                  "steps_per_scan": 50},
                      "peak_rss_gib": 1.0, "run_wall_s": 9.0, "run_command": "y"},
      "seeds": {jax_steps.CASES[0].name: "  N a b c\n  8   10.0   2.0   5.00x\n"}}


def test_report_judges_goals_from_the_measurements():
  # fused: 10 steps in 0.1 s = 100 steps/s · 1 GFLOP = 100 GFLOP/s = 100% of the peak; torch 3× slower.
  text = report.markdown(_fake_results([0.1, 0.1], [0.3, 0.3]))
  assert "| fused step ≥ 2.0× PyTorch eager, 784-512-256-32 relu, B=128 | 3.00×" in text
  assert "| ≥ 75% of the matmul peak, 784-512-256-32 relu, B=128 | 100% | yes | — |" in text
  assert "5.00×" in text and "400 s (extrapolated from 10 images, 2 cores) | NO |" in text
  slow = report.markdown(_fake_results([0.1, 0.1], [0.15, 0.15]))
  assert "1.50× vs torch eager1 (its best threads) | NO |" in slow
  results = _fake_results([0.1, 0.1], [0.3, 0.3])
  results["seeds"][jax_steps.CASES[0].name] = "  8   10.0   2.0   1.50x\n"
  # Same seconds for 10 steps of B=100 and of B=20: batch 100 is 5× faster per example.
  assert ("| 1.50× | NO | one batch-20 step already keeps the cores busy: batch 100 trains only 5.00×"
          in report.markdown(results))


def test_report_says_why_a_speed_goal_is_missed():
  # torch at 10 GFLOP / 0.15 s = 67% of the peak: even at 100% the fused step is only 1.5× faster.
  bound = report.markdown(_fake_results([0.1, 0.1], [0.15, 0.15]))
  assert "out of reach here: torch eager1 already does the step's matmuls at 67% of the matmul peak" in bound
  assert "at 100% the fused step would be 1.50× faster" in bound
  # torch at 10% of the peak, fused at 6.7%: 2× needs 20%.
  short = report.markdown(_fake_results([1.5, 1.5], [1.0, 1.0]))
  assert "vae_jax does the step's matmuls at 7% of the matmul peak and torch eager1 at 10%; 2× needs 20%" in short
  noisy = report.markdown(_fake_results([0.1, 0.1], [0.05, 0.05]))   # torch at 200% of the peak
  assert "not explained: torch eager1 measured at 200% of the matmul peak timed beside it" in noisy
  # The seeds goal is met in the fake results (5.00×): no reason given.
  assert "| 8 vmapped seeds ≥ 3× 8 sequential runs, 784-200-200-50 tanh, B=20 | 5.00× | yes | — |" in short


def test_report_of_the_families_run_judges_the_two_layer_is_nll_goal():
  results = _fake_results([0.1, 0.1], [0.3, 0.3], cases=jax_steps.FAMILY_CASES, is_s=(100.0, 250.0))
  for section in ("default_run", "seeds", "xla_flags"):
    del results[section]
  text = report.markdown(results)
  for case in jax_steps.FAMILY_CASES:
    assert f"| fused step ≥ 2.0× PyTorch eager, {case.name} | 3.00× vs torch eager1" in text
  assert "75% of the matmul peak" not in text and "compile" not in text
  # Two layers: 250 s > 180 s; 2000 GFLOP at 100 GFLOP/s is 20 s at the peak = 8% of 250 s; 180 s needs 11%.
  row = next(line for line in text.splitlines() if f"≤ 180 s on 2 cores, {jax_steps.TWO_LAYERS}" in line)
  assert "250 s (extrapolated from 10 images, 2 cores); 2.50× the time of 784-200-200-50 tanh" in row
  assert "for 0.50× its matmul FLOPs | NO | its matmuls run at 8% of the matmul peak; ≤ 180 s needs ≥ 11% |" in row
  assert "| IS-NLL k=5000 on 10000 images ≤ 300 s on 2 cores, 784-200-200-50 tanh | 100 s" in text
  results["matmul_peak"]["gflops"] = 10.0      # 2000 GFLOP take 200 s even at the peak
  assert "out of reach here: its 2000 GFLOP of matmuls take 200 s even at the matmul peak" in report.markdown(results)
  results["machine"]["nproc"] = 16
  assert "| not judged: 16 cores, the goal is for 2 |" in report.markdown(results)
  results["is_nll"][jax_steps.TWO_LAYERS]["extrapolated_s"] = [150.0]
  results["machine"]["nproc"] = 2
  assert "on 2 cores, 2 layers 784-100-100-z100-50-50-z50 tanh | 150 s" in report.markdown(results)
  assert "for 0.50× its matmul FLOPs | yes | — |" in report.markdown(results)


def _copy_params_to_torch(reference, params):
  """vae_jax's θ (lists of (W [out, in], b)) into the torch reference's nn.Linear layers."""
  torch = _torch()
  pairs = [(reference.encoders[0].net, params["encoder"]), (reference.decoder, params["decoder"])]
  for l, layer in enumerate(params.get("upper", ())):
    pairs += [(reference.encoders[l + 1].net, layer["encoder"]),
              (reference.conditional_priors[l].net, layer["decoder"])]
  linears = []
  with torch.no_grad():
    for sequential, theta in pairs:
      layers = [m for m in sequential if isinstance(m, torch.nn.Linear)]
      assert len(layers) == len(theta)
      for linear, (weight, bias) in zip(layers, theta):
        linear.weight.copy_(torch.from_numpy(np.array(weight)))
        linear.bias.copy_(torch.from_numpy(np.array(bias)))
      linears.append((layers, theta))
  return linears


def _jax_noise(model, key, batch_size, num_samples):
  """ε [k, B, d_l] per layer exactly as vae_jax draws them (`batch_loss`, `sample_latents`)."""
  def draw(example_key, i, l, d):
    sample_key = jax.random.fold_in(example_key, i)
    return jax.random.normal(sample_key if l == 0 else jax.random.fold_in(sample_key, l), (d,))
  @jax.jit
  def noise(key):
    keys, samples = jax.random.split(key, batch_size), jnp.arange(num_samples)
    return [jax.vmap(lambda i: jax.vmap(lambda kb: draw(kb, i, l, d))(keys))(samples)
            for l, d in enumerate(model.latent_dims)]
  return [np.array(e) for e in noise(key)]


def _torch_and_jax_losses(model, params, objective, num_samples, x, gradients=False):
  torch = _torch()
  from benchmarks import torch_reference
  reference = torch_reference.Vae(model.data_dim, model.hidden_widths, model.latent_dims,
                                  model.activation, model.upper_hidden_widths, objective, num_samples)
  linears = _copy_params_to_torch(reference, params)
  key = jax.random.PRNGKey(3)
  noise = [torch.from_numpy(e) for e in _jax_noise(model, key, x.shape[0], num_samples)]
  loss = reference(torch.from_numpy(x), noise)

  def jax_loss(p):
    return objectives.batch_loss(model, p, jnp.asarray(x), key, objective=objective,
                                 num_samples=num_samples)[0]
  if not gradients:
    return float(loss.detach()), float(jax.jit(jax_loss)(params))
  loss.backward()
  grads = jax.jit(jax.grad(jax_loss))(params)
  return linears, grads


CASES_BY_NAME = {c.name: c for c in (*jax_steps.CASES, *jax_steps.FAMILY_CASES)}


@pytest.mark.parametrize("name", [jax_steps.CASES[0].name, jax_steps.CASES[2].name,
                                  *(c.name for c in jax_steps.FAMILY_CASES[:2])])
def test_torch_reference_loss_equals_vae_jax_with_the_same_noise(name):
  """Same θ (vae_jax's init), same ε: the reference's loss is vae_jax's `batch_loss`.

  One layer with the closed-form KL (tanh and relu), the two-layer ELBO (Monte
  Carlo KL, q(z₂|z₁) from the sampled z₁), and the IWAE bound with k = 5.
  """
  _torch()
  config = jax_steps.experiment_config(CASES_BY_NAME[name]._replace(batch_size=4))
  model = build.build_model(config)
  params = jax.jit(model.init)(jax.random.PRNGKey(0))
  x = (np.random.default_rng(0).uniform(size=(4, 784)) > 0.5).astype(np.float32)
  loss, expected = _torch_and_jax_losses(model, params, config.objective.name,
                                         config.objective.num_samples, x)
  np.testing.assert_allclose(loss, expected, rtol=2e-6)


@pytest.mark.parametrize("layers, objective, k", [(2, "elbo", 2), (1, "iwae", 5), (1, "elbo", 1)])
def test_torch_reference_gradient_equals_vae_jax(layers, objective, k):
  """A tiny model (12 pixels): every weight's and bias's gradient agrees with jax.grad of `batch_loss`."""
  torch = _torch()
  upper = {"upper_latent_dims": (3,), "upper_hidden_widths": (4, 4)} if layers == 2 else {}
  model = vae_lib.VAE(input_shape=(12,), hidden_widths=(8, 8), latent_dim=6, activation="tanh", **upper)
  rng = np.random.default_rng(0)      # θ of vae_jax's structure, random biases too
  params = jax.tree_util.tree_map(lambda p: rng.normal(0.0, 0.5, p.shape).astype(np.float32),
                                  jax.eval_shape(model.init, jax.random.PRNGKey(0)))
  x = (np.random.default_rng(1).uniform(size=(3, 12)) > 0.5).astype(np.float32)
  linears, grads = _torch_and_jax_losses(model, params, objective, k, x, gradients=True)
  jax_pairs = [grads["encoder"], grads["decoder"]]
  for layer in grads.get("upper", ()):
    jax_pairs += [layer["encoder"], layer["decoder"]]
  assert len(linears) == len(jax_pairs) == 2 * layers
  for (layers_t, _), theta_grad in zip(linears, jax_pairs):
    for linear, (weight_grad, bias_grad) in zip(layers_t, theta_grad):
      for got, want in ((linear.weight.grad, weight_grad), (linear.bias.grad, bias_grad)):
        want = np.asarray(want)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
  del torch


@pytest.mark.parametrize("name", list(CASES_BY_NAME))
def test_run_all_builds_the_reference_of_each_case(name):
  """The torch model run_all times has vae_jax's parameter shapes, objective and k for every case."""
  _torch()
  from benchmarks import run_all
  from benchmarks import torch_reference
  config = jax_steps.experiment_config(CASES_BY_NAME[name])
  kwargs = run_all.reference_model_kwargs(config)
  reference = torch_reference.Vae(784, **kwargs)
  shapes = jax.tree_util.tree_leaves(jax.eval_shape(build.build_model(config).init, jax.random.PRNGKey(0)))
  assert sorted(tuple(p.shape) for p in reference.parameters()) == sorted(tuple(p.shape) for p in shapes)
  assert (kwargs["objective"], kwargs["num_samples"]) == (config.objective.name, config.objective.num_samples)


def test_torch_reference_initialisation_scales_match_vae_jax():
  _torch()
  from benchmarks import torch_reference
  reference = torch_reference.Vae(784, (512, 256), (32,), "relu")
  first, last = (reference.encoders[0].net[i].weight.detach() for i in (0, -1))
  assert abs(float(first.std()) - np.sqrt(2 / 784)) < 0.05 * np.sqrt(2 / 784)   # He
  limit = np.sqrt(6 / (256 + 64))                                                 # Glorot, identity head
  assert float(last.abs().max()) <= limit and float(last.abs().max()) > 0.9 * limit
  assert float(reference.decoder[2].bias.detach().abs().max()) == 0.0


def test_quality_per_hour_config_keeps_a_checkpoint_per_curve_point():
  from benchmarks import quality_per_hour
  from vae_jax import config as config_lib
  options = dict(quality_per_hour.DEFAULTS, epochs="90", curve_points="3", batch_size="100")
  config = quality_per_hour.make_config(options)
  config_lib.validate(config)
  assert config.data.name == "dynamic_binarized_mnist" and config.data.train_on_validation
  assert (config.model.hidden_widths, config.model.latent_dim) == ((200, 200), 50)
  assert config.training.num_epochs == 90 and config.training.eval_every_epochs == 30
  # 60000 images / batch 100 = 600 steps per epoch, one lax.scan call each; a kept checkpoint every 30 epochs.
  assert config.training.batch_size == 100 and config.training.steps_per_scan == 600
  assert config.training.checkpoint_every_steps == 30 * 600
  assert config.training.keep_checkpoints_every_steps == 30 * 600
  assert quality_per_hour.make_config(quality_per_hour.DEFAULTS).training.batch_size == 20   # the paper's
  assert config.eval.is_num_samples == 5000


@pytest.mark.parametrize("nll, met", [(86.5, True), (88.0, False)])
def test_quality_per_hour_report_judges_the_goal(tmp_path, nll, met):
  from benchmarks import quality_per_hour
  options = dict(quality_per_hour.DEFAULTS, out=str(tmp_path))
  final = {"nll": nll, "nll_stderr": 0.2, "neg_elbo": 90.0, "neg_elbo_stderr": 0.3,
           "train_wall_time_s": 3000.0, "epochs": 2700, "num_test_examples": 10000}
  points = [{"step": 600 * e, "epoch": e, "wall_time_s": 1.2 * e, "nll": 100.0 - e / 100,
             "nll_stderr": 0.5, "neg_elbo": 105.0, "num_images": 1000} for e in (300, 600)]
  quality_per_hour.write_report(options, final, points, 200.0, timing.machine())
  text = (tmp_path / "quality_per_hour.md").read_text()
  assert ("— met." in text) == met and ("NOT met" in text) != met
  assert "| 600 | 12.0 | 94.00 ± 0.50 | 105.00 | 1000 |" in text
  assert json.loads((tmp_path / "quality_per_hour.json").read_text())["met"] is met
  assert (tmp_path / "quality_per_hour.png").stat().st_size > 0
