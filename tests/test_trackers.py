"""W&B (offline mode) and MLflow (a local SQLite store) trackers get what metrics.jsonl gets.

Both packages are optional (`pip install -e ".[trackers]"`); without them these
tests are skipped with the reason shown in the summary (`-rs`, see pytest.ini).
"""
import json

import numpy as np
import pytest

from conftest import tiny_config
from vae_jax import config as config_lib
from vae_jax.run import metrics
from vae_jax.run import train
from vae_jax.run import trackers


def _wandb():
  return pytest.importorskip("wandb", reason='wandb is not installed (pip install -e ".[trackers]")')


def _mlflow():
  return pytest.importorskip("mlflow", reason='mlflow is not installed (pip install -e ".[trackers]")')


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
  monkeypatch.setenv("WANDB_SILENT", "true")
  monkeypatch.setenv("WANDB_MODE", "offline")   # never reach the network, whatever the config says


def _history(uri, run_id, key):
  from mlflow import tracking  # pylint: disable=g-import-not-at-top
  return [(m.step, m.value) for m in tracking.MlflowClient(uri).get_metric_history(run_id, key)]


def test_check_config_names_the_field_and_the_fix(monkeypatch):
  logging_config = config_lib.default_config().logging
  logging_config.wandb_mode = "cloud"
  with pytest.raises(ValueError, match=r"config.logging.wandb_mode='cloud': unknown mode"):
    trackers.check_config(logging_config)
  logging_config.wandb_mode, logging_config.mlflow_uri = "offline", "file:/tmp/x"
  monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ValueError, match=r'mlflow package is not installed; pip install -e "\.\[trackers\]"'):
    trackers.check_config(logging_config)


def test_default_config_has_no_trackers(tmp_path):
  assert trackers.from_config(config_lib.default_config(), str(tmp_path)) == []
  assert not list(tmp_path.iterdir())


def test_mlflow_tracker_logs_finite_scalars_by_step(tmp_path):
  _mlflow()
  uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
  tracker = trackers.MlflowTracker(uri, "exp", "run", {"model.latent_dim": 4})
  tracker.log(1, "train", {"loss": 3.0, "finite": 1})
  tracker.log(2, "train", {"loss": float("nan")})
  tracker.log(2, "validation", {"neg_elbo": 2.5})
  tracker.close()
  assert _history(uri, tracker.run_id, "train/loss") == [(1, 3.0)]      # NaN is not reported
  assert _history(uri, tracker.run_id, "validation/neg_elbo") == [(2, 2.5)]
  from mlflow import tracking  # pylint: disable=g-import-not-at-top
  run = tracking.MlflowClient(uri).get_run(tracker.run_id)
  assert run.data.params == {"model.latent_dim": "4"} and run.info.status == "FINISHED"


def test_wandb_tracker_offline(tmp_path):
  _wandb()
  tracker = trackers.WandbTracker("vae_jax", "offline", "run", str(tmp_path), {"seed": 0})
  tracker.log(1, "train", {"loss": 3.0})
  tracker.log(2, "train", {"loss": 2.0, "skipped": float("inf")})
  summary = dict(tracker.run.summary)
  assert summary["train/loss"] == 2.0 and summary["step"] == 2
  assert "train/skipped" not in summary
  tracker.close()
  assert list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))


def test_training_logs_to_both_and_a_resumed_run_continues_them(raw_data, tfds_data_dir, tmp_path):
  _wandb()
  _mlflow()
  uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
  workdir = tmp_path / "run"
  logged = dict(logging__wandb=True, logging__wandb_mode="offline", logging__mlflow_uri=uri,
                training__num_epochs=1)
  train.train_and_evaluate(tiny_config(raw_data, tfds_data_dir, **logged), str(workdir))
  ids = json.loads((workdir / "trackers.json").read_text())
  records = metrics.read_metrics(str(workdir / "metrics.jsonl"))
  train_loss = [(r["step"], r["loss"]) for r in records if r["split"] == "train"]
  logged_loss = _history(uri, ids["mlflow"], "train/loss")
  assert [s for s, _ in logged_loss] == [s for s, _ in train_loss]
  np.testing.assert_allclose([v for _, v in logged_loss], [v for _, v in train_loss], rtol=1e-6)
  results = json.loads((workdir / "results.json").read_text())
  assert _history(uri, ids["mlflow"], "test/nll") == [(results["step"], pytest.approx(results["nll"]))]
  wandb_file = next(workdir.glob(f"wandb/offline-run-*-{ids['wandb']}/run-{ids['wandb']}.wandb"))
  assert b"train/loss" in wandb_file.read_bytes() and b"test/neg_elbo" in wandb_file.read_bytes()

  # Two epochs instead of one: the run resumes, and so do its W&B and MLflow runs.
  train.train_and_evaluate(tiny_config(raw_data, tfds_data_dir, **dict(logged, training__num_epochs=2)),
                           str(workdir))
  assert json.loads((workdir / "trackers.json").read_text()) == ids
  steps = [step for step, _ in _history(uri, ids["mlflow"], "train/loss")]
  assert steps == list(range(1, 2 * len(train_loss) + 1))
  from mlflow import tracking  # pylint: disable=g-import-not-at-top
  assert len(tracking.MlflowClient(uri).search_runs([tracking.MlflowClient(uri).get_experiment_by_name(
      "vae_jax").experiment_id])) == 1
