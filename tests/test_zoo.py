"""The model zoo: export a trained run, load it by name, get the same model back."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, tiny_config
from vae_jax.datasets import splits
from vae_jax.inference import evaluation
from vae_jax.run import train
from vae_jax.run import workdir as workdir_lib
from vae_jax.run import zoo


@pytest.fixture(scope="module")
def trained(raw_data, tfds_data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  config = tiny_config(raw_data, tfds_data_dir, data__name="dynamic_binarized_mnist")
  train.train_and_evaluate(config, str(workdir))
  return str(workdir)


def scores(model, params, config, num=100):
  config.eval.num_examples = num
  images = splits.load_data(config, "test").images
  return evaluation.evaluate(model, params, images, jax.random.PRNGKey(3), num_samples=20, chunk_size=10)


def test_float32_round_trip_is_exact(trained, tmp_path):
  folder = zoo.export(trained, "tiny_vae", zoo=str(tmp_path))
  assert sorted(os.listdir(folder)) == ["config.json", "entry.json", "params.npz", "results.json"]
  assert zoo.available(str(tmp_path)) == ["tiny_vae"]
  config, model, params = zoo.load_pretrained("tiny_vae", str(tmp_path))
  config_w, model_w, params_w = workdir_lib.load_trained(trained)
  assert model == model_w and config.data.name == config_w.data.name and config.data.raw_data_dir == ""
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, params_w)
  assert scores(model, params, config_w) == scores(model_w, params_w, config_w)
  assert zoo.recorded_results("tiny_vae", str(tmp_path)) == json.load(open(os.path.join(trained, "results.json")))


def test_float16_storage_error_is_bounded(trained, tmp_path):
  zoo.export(trained, "tiny_half", dtype="float16", zoo=str(tmp_path))
  entry = json.load(open(tmp_path / "tiny_half" / "entry.json"))
  assert entry["dtype"] == "float16" and 0 < entry["max_relative_rounding_error"] <= 2.0**-11
  config, model, params = zoo.load_pretrained("tiny_half", str(tmp_path))
  _, _, exact = workdir_lib.load_trained(trained)
  for half, full in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(exact)):
    assert half.dtype == full.dtype == np.float32
    np.testing.assert_array_less(np.abs(half - full), np.maximum(np.abs(full), 2.0**-14) * 2.0**-11 + 1e-12)
  nll_half, nll_full = scores(model, params, config)["nll"], scores(model, exact, config)["nll"]
  assert abs(nll_half - nll_full) < 0.01, (nll_half, nll_full)   # nats, same samples


def test_bad_names_existing_entries_and_changed_files(trained, tmp_path):
  with pytest.raises(ValueError, match="no pretrained model 'nope' in .*; available: none yet"):
    zoo.load_pretrained("nope", str(tmp_path))
  zoo.export(trained, "tiny", zoo=str(tmp_path))
  with pytest.raises(ValueError, match="available: tiny."):
    zoo.load_pretrained("tin", str(tmp_path))
  before = (tmp_path / "tiny" / "params.npz").read_bytes()
  with pytest.raises(ValueError, match="exists"):
    zoo.export(trained, "tiny", zoo=str(tmp_path))
  assert (tmp_path / "tiny" / "params.npz").read_bytes() == before   # never overwritten
  with pytest.raises(ValueError, match="lower-case"):
    zoo.export(trained, "Tiny VAE", zoo=str(tmp_path))
  with pytest.raises(ValueError, match="has no results.json"):
    zoo.export(str(tmp_path), "other", zoo=str(tmp_path))
  (tmp_path / "tiny" / "params.npz").write_bytes(before[:-1] + bytes([before[-1] ^ 1]))
  with pytest.raises(ValueError, match="SHA-256"):
    zoo.load_pretrained("tiny", str(tmp_path))


def test_a_file_that_does_not_fit_the_model_is_an_error(tmp_path):
  template = {"encoder": {"w": np.zeros((3, 2), np.float32)}, "decoder": {"w": np.zeros(2, np.float32)}}
  np.savez(tmp_path / "p.npz", **{"['encoder']['w']": np.ones((3, 2)), "['decoder']['w']": np.ones(2)})
  restored = zoo.restore_params(str(tmp_path / "p.npz"), template)
  assert restored["encoder"]["w"].dtype == np.float32 and float(restored["decoder"]["w"].sum()) == 2.0
  np.savez(tmp_path / "p.npz", **{"['encoder']['w']": np.ones((2, 3)), "['decoder']['w']": np.ones(2)})
  with pytest.raises(ValueError, match=r"\['encoder'\]\['w'\]: shape \[2, 3\] in the file, \[3, 2\] in the model"):
    zoo.restore_params(str(tmp_path / "p.npz"), template)
  np.savez(tmp_path / "p.npz", **{"['encoder']['w']": np.ones((3, 2))})
  with pytest.raises(ValueError, match="missing in the file"):
    zoo.restore_params(str(tmp_path / "p.npz"), template)


def test_evaluate_pretrained_prints_the_numbers_of_the_workdir(trained, tmp_path):
  """The command line round trip; a bad name is one line listing the entries."""
  zoo.export(trained, "tiny_cli", zoo=str(tmp_path))
  env = dict(os.environ, VAE_JAX_ZOO_DIR=str(tmp_path))
  common = [sys.executable, "-m", "experiments.evaluate", "--num_samples=10", "--num_examples=50"]
  out = {}
  for source in (f"--workdir={trained}", "--pretrained=tiny_cli"):
    done = subprocess.run(common + [source], capture_output=True, text=True, env=env, cwd=REPO, check=True)
    out[source.split("=")[0]] = json.loads(done.stdout.strip().splitlines()[-1])
  assert out["--pretrained"]["nll"] == out["--workdir"]["nll"]
  assert out["--pretrained"]["neg_elbo"] == out["--workdir"]["neg_elbo"]
  assert out["--pretrained"]["recorded_nll"] == json.load(open(os.path.join(trained, "results.json")))["nll"]
  bad = subprocess.run(common + ["--pretrained=tiny_cl"], capture_output=True, text=True, env=env, cwd=REPO)
  assert bad.returncode == 1
  assert bad.stderr.strip().splitlines() == [
      f"error: no pretrained model 'tiny_cl' in {tmp_path}; available: tiny_cli."]


def test_figures_and_applications_run_on_a_pretrained_model(trained, tmp_path, monkeypatch):
  from experiments import applications
  from experiments import figures
  zoo.export(trained, "tiny_apps", zoo=str(tmp_path / "zoo"))
  monkeypatch.setenv(zoo.ZOO_ENV, str(tmp_path / "zoo"))
  records, run = figures.draw_run(zoo.entry_dir("tiny_apps"), str(tmp_path / "figures"), pretrained=True)
  assert {"network", "reconstructions", "samples"} <= {r["name"] for r in records}
  assert run["results"]["nll"] == zoo.recorded_results("tiny_apps")["nll"]
  rows = applications.run("generation", [], applications.Options(out=str(tmp_path / "apps")), pretrained=["tiny_apps"])
  assert rows[0]["workdir"] == "tiny_apps" and rows[0]["latent_dim"] == 4
  with pytest.raises(ValueError, match="no models"):
    applications.run("generation", [], applications.Options(out=str(tmp_path / "apps")))
