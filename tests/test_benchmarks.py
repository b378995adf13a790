"""The benchmark suite's pieces: FLOP count, report, and the PyTorch reference = vae_jax's model."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.models import build
from benchmarks import jax_steps
from benchmarks import report
from benchmarks import timing
from vae_jax.models import distributions


def test_flops_count_every_layer_of_encoder_and_decoder():
  # 784-200-200-50: encoder 784·200 + 200·200 + 200·100, decoder 50·200 + 200·200 + 200·784.
  macs = 784 * 200 + 200 * 200 + 200 * 100 + 50 * 200 + 200 * 200 + 200 * 784
  assert timing.mlp_vae_matmul_flops((200, 200), 50, 20) == 6 * 20 * macs


def test_pair_ratios_pair_round_by_round():
  assert timing.pair_ratios([2.0, 9.0, 4.0], [1.0, 3.0, 4.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}


def _fake_results(fused_s, torch_s):
  training = {}
  for case in jax_steps.CASES:
    training[case.name] = {"num_steps": 10, "step_gflop": 1.0, "peak_gflops": [100.0] * 2,
                           "seconds": {"vae_jax fused": fused_s, "torch eager1": torch_s}}
  return {
      "machine": dict(timing.machine(), load_average_end=[0, 0, 0]), "command": "x",
      "xla_flags_env": "", "matmul_peak": {"size": 8, "per_size": {8: timing.summary([1.0])}},
      "training": training, "xla_flags": {},
      "is_nll": {"m": {"images": 10, "seconds": [1.0], "extrapolated_s": [400.0]}},
      "default_run": {"compile": {"total_s": 3.0, "trace_lower_s": 1.0, "compile_s": 2.0,
                                  "steps_per_scan": 50},
                      "peak_rss_gib": 1.0, "run_wall_s": 9.0, "run_command": "y"},
      "seeds": {jax_steps.CASES[0].name: "  N a b c\n  8   10.0   2.0   5.00x\n"}}


def test_report_judges_goals_from_the_measurements():
  # fused: 10 steps in 0.1 s = 100 steps/s · 1 GFLOP = 100 GFLOP/s = 100% of the peak; torch 3× slower.
  text = report.markdown(_fake_results([0.1, 0.1], [0.3, 0.3]))
  assert "| fused step ≥ 2.0× PyTorch eager, 784-512-256-32 relu, B=128 | 3.00×" in text
  assert "| ≥ 75% of the matmul peak, 784-512-256-32 relu, B=128 | 100% | yes |" in text
  assert "5.00×" in text and "400 s (extrapolated from 10 images) | NO |" in text
  slow = report.markdown(_fake_results([0.1, 0.1], [0.15, 0.15]))
  assert "1.50× vs torch eager1 (its best threads) | NO |" in slow


@pytest.mark.parametrize("config_name", ["iwae", "default"])
def test_torch_reference_loss_equals_vae_jax_at_zero_noise(config_name, monkeypatch):
  """Same θ, ε = 0: the reference's loss is −mean(log p(x|μ) − KL) computed by vae_jax."""
  torch = pytest.importorskip("torch")
  from benchmarks import torch_reference
  config = jax_steps.experiment_config(jax_steps.Case("c", config_name, 4))
  model = build.build_model(config)
  params = model.init(jax.random.PRNGKey(0))
  reference = torch_reference.MlpVae(784, model.hidden_widths, model.latent_dim, model.activation)
  with torch.no_grad():
    for part in ("encoder", "decoder"):
      for linear, (weight, bias) in zip(getattr(reference, part), params[part]):
        linear.weight.copy_(torch.from_numpy(np.array(weight)))
        linear.bias.copy_(torch.from_numpy(np.array(bias)))
  x = (np.random.default_rng(0).uniform(size=(4, 784)) > 0.5).astype(np.float32)
  monkeypatch.setattr(torch, "randn_like", torch.zeros_like)
  with torch.no_grad():
    loss = float(reference(torch.from_numpy(x)))

  def objective(x_b):
    mu, log_var = model.encode(params, x_b)
    recon = model.log_likelihood(params, x_b, model.decode(params, mu))
    return recon - distributions.gaussian_kl_to_standard(mu, log_var)
  expected = -float(jnp.mean(jax.vmap(objective)(jnp.asarray(x))))
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_torch_reference_initialisation_scales_match_vae_jax():
  torch = pytest.importorskip("torch")
  from benchmarks import torch_reference
  reference = torch_reference.MlpVae(784, (512, 256), 32, "relu")
  first, last = reference.encoder[0].weight, reference.encoder[-1].weight
  assert abs(float(first.detach().std()) - np.sqrt(2 / 784)) < 0.05 * np.sqrt(2 / 784)   # He
  limit = np.sqrt(6 / (256 + 64))                                                 # Glorot, identity head
  assert float(last.detach().abs().max()) <= limit and float(last.detach().abs().max()) > 0.9 * limit
  assert float(reference.decoder[1].bias.detach().abs().max()) == 0.0


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
