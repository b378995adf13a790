"""Two-layer and VampPrior runs end to end through `experiments.train`: killed, resumed bit-identically."""

import json
import signal

import pytest

from test_reliability import TINY_FLAGS, assert_same_run, final_state_arrays, run

FAMILIES = {
    "two_layers_iwae_dreg": ("experiments/configs/iwae.py:layers=2,objective=iwae,k=3,estimator=dreg",
                             ("--config.model.upper_latent_dims=(2,)", "--config.model.upper_hidden_widths=(2,)")),
    "vampprior_ema": ("experiments/configs/vampprior.py:layers=1",
                      ("--config.model.prior_components=5", "--config.training.ema_decay=0.9")),
}


def command(config, workdir, raw_data, tfds_data_dir, extra):
  import sys
  return [sys.executable, "-m", "experiments.train", f"--config={config}", f"--workdir={workdir}",
          f"--config.data.raw_data_dir={raw_data}", f"--config.data.data_dir={tfds_data_dir}",
          *TINY_FLAGS, *extra]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_trains_checkpoints_and_resumes_bit_identically(family, raw_data, tfds_data_dir, tmp_path):
  config, extra = FAMILIES[family]
  reference = tmp_path / "reference"
  done = run(command(config, reference, raw_data, tfds_data_dir, extra))
  assert done.returncode == 0, done.stderr[-3000:]
  killed = tmp_path / "killed"
  cmd = command(config, killed, raw_data, tfds_data_dir, extra)
  result = run(cmd, VAE_JAX_KILL_AT="after rename */checkpoints/4.orbax-checkpoint-tmp",
               VAE_JAX_KILL_LOG=str(tmp_path / "kills.log"))
  assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
  assert not (killed / "results.json").exists()
  resumed = run(cmd)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert_same_run(killed, reference)
  results = json.loads((reference / "results.json").read_text())
  assert results["nll"] > 0 and results["neg_elbo"] >= results["nll"] - 1.0
  _, arrays = final_state_arrays(reference)
  averaged = [name for name in arrays if name.startswith("/ema_params/")]
  params = [name for name in arrays if name.startswith("/params/")]
  # The moving average is checkpointed beside θ (one array per parameter) when it is on.
  assert len(averaged) == (len(params) if "ema" in family else 0)
  saved = json.loads((reference / "config.json").read_text())
  assert saved["model"]["prior"] == ("vampprior" if "vampprior" in family else "standard_normal")


@pytest.mark.parametrize("config, flags, message", [
    ("experiments/configs/vampprior.py:layers=1", ("--config.model.prior_components=0",),
     "error: model.prior_components=0: a vampprior prior needs K ≥ 1 components"),
    ("experiments/configs/iwae.py:k=1,estimator=dreg", (), "error: objective.estimator='dreg' is the IWAE"),
    ("experiments/configs/flow.py:kind=iaf", ("--config.objective.estimator=stl",),
     "error: objective.estimator='stl' needs log q(z|x) at any z"),
    ("experiments/configs/autoencoder.py", ("--config.model.flow=iaf", "--config.model.flow_length=2"),
     "error: model.flow='iaf': a deterministic autoencoder"),
    ("experiments/configs/iwae.py:layers=3", (), "layers must be 1 or 2"),
])
def test_family_that_makes_no_sense_is_one_line_before_anything_is_written(config, flags, message, tmp_path):
  import sys
  workdir = tmp_path / "run"
  result = run([sys.executable, "-m", "experiments.train", f"--config={config}", f"--workdir={workdir}", *flags])
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
  assert not workdir.exists()
