"""experiments.reproduce: the cells, the table from the records, and training cells within a budget."""
import json
import os
import types

import pytest

from conftest import REPO
from experiments import reproduce
from vae_jax import config as config_lib


def test_cells_paper_columns_and_budgets():
  assert len(reproduce.CELLS) == 12   # 10 distinct IWAE-table models (k=1 of VAE and IWAE is one) + 2 VampPrior
  paper = {name: cell.paper for name, cell in reproduce.CELLS.items()}
  assert paper["vae_1layer_k1"] == 86.76 and paper["iwae_1layer_k5"] == 85.54 and paper["iwae_1layer_k50"] == 84.78
  assert paper["vae_1layer_k5"] == 86.47 and paper["vae_1layer_k50"] == 86.35
  assert paper["vae_2layer_k1"] == 85.33 and paper["vae_2layer_k5"] == 85.01 and paper["vae_2layer_k50"] == 84.78
  assert paper["iwae_2layer_k5"] == 83.89 and paper["iwae_2layer_k50"] == 82.90
  assert paper["vampprior_1layer"] == 85.57 and paper["vampprior_2layer"] == 83.19
  assert reproduce.CELLS["iwae_2layer_k5"].config == "experiments/configs/iwae.py:layers=2,objective=iwae,k=5"
  assert reproduce.CELLS["vampprior_2layer"].config == "experiments/configs/vampprior.py:layers=2"
  budgets = {name: cell.budget_s for name, cell in reproduce.CELLS.items()}
  assert budgets["vae_1layer_k1"] == budgets["iwae_2layer_k50"] == 3600
  assert budgets["vae_2layer_k5"] == budgets["vampprior_1layer"] == 7200


@pytest.mark.parametrize("command, cell", [
    ("python -m experiments.train --config=experiments/configs/iwae.py:layers=2,objective=iwae,k=5 --w=x",
     "iwae_2layer_k5"),
    ("python -m experiments.train --config=experiments/configs/iwae.py:layers=1,objective=iwae,k=1", "vae_1layer_k1"),
    ("python -m experiments.train --config=experiments/configs/iwae.py:k=50,epochs=100 --w=x", "iwae_1layer_k50"),
    ("python -m experiments.train --config=experiments/configs/iwae.py:k=1,static=1,epochs=600", None),
    ("python -m experiments.train --config=experiments/configs/vampprior.py:layers=1", "vampprior_1layer"),
    ("python -m experiments.train --config=experiments/configs/default.py", None),
    (None, None)])
def test_a_record_is_matched_to_its_cell_by_its_command(command, cell):
  assert reproduce.identify(command) == cell


def record(root, name, nll, stderr=0.2, *, command=None, subset=0, on_validation=True, epochs=900,
           sessions=(1000.0,), train_s=500.0, device="cpu: cpu x1", validation=(95.0, 94.0)):
  """A record folder as reproduce.publish writes it (run.json without sessions: an older record)."""
  folder = root / "iwae_runs" / name
  folder.mkdir(parents=True)
  config = config_lib.default_config()
  config.data.name, config.data.train_subset = "dynamic_binarized_mnist", subset
  config.data.train_on_validation, config.eval.is_num_samples = on_validation, 5000
  (folder / "config.json").write_text(config.to_json_best_effort())
  results = {"neg_elbo": nll + 4, "neg_elbo_stderr": 0.3, "nll": nll, "nll_stderr": stderr, "step": 100 * epochs,
             "epochs": epochs, "num_test_examples": 10000, "train_wall_time_s": train_s}
  (folder / "results.json").write_text(json.dumps(results))
  metrics = [{"step": 10 * i, "split": "validation", "epoch": i, "neg_elbo": v, "wall_time": 1.0 * i}
             for i, v in enumerate(validation, 1)]
  (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
  cell = reproduce.CELLS.get(name)
  command = command or f"python -m experiments.train --config={cell.config} --workdir=w"
  if sessions:
    launch = {"command": command, "device": device, "cores": 2, "test_binarization": reproduce.TEST_BINARIZATION,
              "sessions": [{"wall_s": s, "start_step": 0} for s in sessions]}
    (folder / "launch.json").write_text(json.dumps(launch))
    (folder / "curve.json").write_text(json.dumps({"num_images": 1000, "points": [
        {"step": 50, "training_time_s": 600.0, "nll": nll + 1, "nll_stderr": 0.7, "wall_time_s": 600.0}]}))
  else:
    (folder / "run.json").write_text(json.dumps({"command": command, "device": device}))
  return folder


def test_table_is_rendered_from_the_records(tmp_path):
  record(tmp_path, "vae_1layer_k1", 86.5, sessions=(1200.0, 1500.0), train_s=900.0)   # two sessions
  record(tmp_path, "iwae_1layer_k5", 85.0, validation=(90.0, 90.5))
  record(tmp_path, "iwae_1layer_k50", 85.8, stderr=0.25, epochs=300)     # inverts the paper's k=50 < k=5
  record(tmp_path, "vae_2layer_k1", 85.0, subset=2000, device="gpu: NVIDIA H200 x1")      # a smoke run
  record(tmp_path, "vae_k1", 88.6, sessions=(), on_validation=False,
         command="python -m experiments.train --config=experiments/configs/iwae.py:k=1,epochs=600")
  (tmp_path / "iwae_runs" / "unfinished").mkdir()
  rows = reproduce.collect(str(tmp_path))
  assert [r["record"] for r in rows] == ["vae_1layer_k1", "iwae_1layer_k5", "iwae_1layer_k50", "vae_2layer_k1",
                                         "vae_k1"]
  first, legacy = rows[0], rows[-1]
  assert first["training_time_s"] == 1200.0 + 900.0 and first["ours_minus_paper"] == pytest.approx(86.5 - 86.76)
  assert first["comparable"] and first["in_grid"] and first["sessions"] == 2
  assert legacy["cell"] == "vae_1layer_k1" and not legacy["in_grid"] and not legacy["comparable"]
  assert legacy["protocol_problems"] == ["trained on 50000 images, not 60000"]
  assert "before 2026-12-01" in legacy["test_binarization"]
  assert rows[3]["protocol_problems"] == ["trained on 2000 images, not 60000"] and rows[3]["gpu"]
  json_path, md_path = reproduce.write_table(rows, str(tmp_path), "python -m experiments.reproduce --collect")
  text = open(md_path).read()
  assert "| VAE, 1 stochastic layer | 86.50 ± 0.20 / 86.76 | — / 86.47 | — / 86.35 |" in text
  assert "| IWAE, 1 stochastic layer | 86.50 ± 0.20 / 86.76 | 85.00 ± 0.20 / 85.54 | 85.80 ± 0.25 / 84.78 |" in text
  assert "| VAE, 2 stochastic layers | 85.00 ± 0.20 * / 85.33 |" in text
  assert ("| vae_1layer_k1 | vae_1layer_k1 | 86.50 ± 0.20 | 86.76 | -0.26 | 90.50 ± 0.30 | 900 |"
          " 0.58 h on 2 CPU cores | 2 | 0 | yes |") in text
  assert "| vae_2layer_k1 | vae_2layer_k1 | 85.00 ± 0.20 | 85.33 | -0.33 |" in text and "| 8.3 GPU-min |" in text
  assert "| vae_k1 | vae_1layer_k1 | 88.60 ± 0.20 | 86.76 | +1.84 |" in text
  assert "no: trained on 50000 images, not 60000 |" in text
  inversions = [line for line in text.splitlines() if line.startswith("* **") and "≥" in line]
  assert inversions == [
      "* **iwae_1layer_k50 ≥ iwae_1layer_k5**: ours 85.80 ≥ 85.00 (gap 0.80 ± 0.32, unpaired s.e.: beyond 2 s.e.);"
      " the paper has 84.78 < 85.54. iwae_1layer_k50: 300 epochs in 0.14 h on 2 CPU cores, validation −ELBO still"
      " falling at the end (95.00 → 94.00); iwae_1layer_k5: 900 epochs in 0.14 h on 2 CPU cores, validation"
      " −ELBO flat or rising at the end (90.00 → 90.50)."]
  assert "`python -m experiments.train --config=experiments/configs/iwae.py:k=1,epochs=600`" in text
  assert json.load(open(json_path))["rows"][0]["test_nll"] == 86.5
  assert (tmp_path / "iwae_curves.png").stat().st_size > 0


def flags_like(**values):
  defaults = dict(run=False, collect=False, cells=[], epochs=None, parallel=1, curve_points=12, curve_images=1000,
                  tag="")
  return types.SimpleNamespace(**dict(defaults, **values))


@pytest.mark.parametrize("values, extra, message", [
    ({}, [], "nothing to do"),
    ({"run": True, "cells": ["vae_k2"]}, [], "unknown cell"),
    ({"run": True, "cells": ["vae_1layer_k1"]}, ["--epochs=3"], "--config"),
    ({"run": True}, [], "--run needs --cells"),
    ({"run": True, "cells": ["vae_1layer_k1"]}, [], "--run needs --epochs"),
    ({"collect": True, "tag": "GPU run"}, [], "--tag"),
])
def test_bad_arguments_are_one_line_errors(values, extra, message):
  with pytest.raises(ValueError, match=message):
    reproduce.check_arguments(flags_like(**values), extra)


TINY_CONFIG = '''
from vae_jax import config as config_lib


def get_config():
  config = config_lib.default_config()
  config.data.name = "dynamic_binarized_mnist"
  config.model.hidden_widths = (32,)
  config.model.latent_dim = 4
  config.training.batch_size = 32
  config.training.steps_per_scan = 4
  config.training.checkpoint_every_steps = 8
  config.eval.batch_size = 100
  config.eval.is_chunk_size = 10
  config.eval.write_images = False
  config.eval.write_figures = False
  return config
'''
TINY_EXTRA = ("--config.data.train_subset=256", "--config.eval.num_examples=100", "--config.eval.is_num_samples=20")


def test_a_cell_is_stopped_resumed_published_and_held_to_its_budget(raw_data, tfds_data_dir, tmp_path, monkeypatch):
  monkeypatch.chdir(REPO)
  (tmp_path / "tiny.py").write_text(TINY_CONFIG)
  cell = reproduce.Cell("tiny", "a tiny VAE", str(tmp_path / "tiny.py"), 86.76, 0.0)
  command, final_step = reproduce.train_command(cell, 2, "w", TINY_EXTRA, curve_points=2)
  assert final_step == 2 * (256 // 32)
  names = [arg.split("=", 1)[0] for arg in command[3:]]
  assert len(names) == len(set(names))   # each flag once: experiments.train refuses repeats
  overridden = {arg.split("=", 1)[0] for arg in TINY_EXTRA}
  kept = [arg for arg in reproduce.PROTOCOL if arg.split("=", 1)[0] not in overridden]
  assert [arg for arg in command if arg in kept] == kept and set(TINY_EXTRA) <= set(command)
  assert command[3] == f"--config={cell.config}" and "--config.training.num_epochs=2" in command
  assert "--config.training.keep_checkpoints_every_steps=8" in command   # one kept checkpoint per epoch

  root = str(tmp_path / "work")
  finished, problems = reproduce.run_cells([cell], 2, root, extra=TINY_EXTRA, session_s=0.5, curve_points=2)
  assert not finished and "stopped at --session_s" in problems[0]
  finished, problems = reproduce.run_cells([cell], 2, root, extra=TINY_EXTRA, curve_points=2)   # resumes
  workdir = os.path.join(root, "tiny_e2")
  assert finished == [(cell, workdir)] and not problems
  sessions = json.load(open(os.path.join(workdir, "launch.json")))["sessions"]
  assert [s["stopped"] for s in sessions] == ["session", None] and sessions[1]["end_step"] == final_step

  folder = reproduce.publish("tiny", workdir, str(tmp_path / "results"), str(tmp_path / "zoo"), curve_images=50)
  assert sorted(os.listdir(folder)) == ["config.json", "curve.json", "launch.json", "metrics.jsonl", "results.json"]
  results = json.load(open(os.path.join(folder, "results.json")))
  launch = json.load(open(os.path.join(folder, "launch.json")))
  assert launch["training_time_s"] == pytest.approx(sessions[0]["wall_s"] + results["train_wall_time_s"])
  points = json.load(open(os.path.join(folder, "curve.json")))["points"]
  assert [p["step"] for p in points] == [8, 16] and all(p["num_images"] == 50 for p in points)
  assert points[0]["training_time_s"] == pytest.approx(sessions[0]["wall_s"] + points[0]["wall_time_s"])
  assert os.path.exists(tmp_path / "zoo" / "tiny" / "params.npz")
  assert reproduce.publish("tiny", workdir, str(tmp_path / "results"), str(tmp_path / "zoo")) == folder  # again: no-op
  with pytest.raises(ValueError, match="holds another run"):
    reproduce.publish("tiny", str(tmp_path), str(tmp_path / "results"), str(tmp_path / "zoo"))
  rows = reproduce.collect(str(tmp_path / "results"))
  assert rows[0]["record"] == "tiny" and rows[0]["test_nll"] == results["nll"] and len(rows[0]["curve"]) == 2
  assert rows[0]["protocol_problems"] == ["trained on 256 images, not 60000", "100 test images", "IS k=20"]

  _, problems = reproduce.run_cells([cell], 2, root, tag="small", extra=TINY_EXTRA, budget_s=0.5)
  assert "its budget of 0 s ran out at step 0 of 16" in problems[0]
  _, problems = reproduce.run_cells([cell], 2, root, tag="small", extra=TINY_EXTRA, budget_s=0.5)
  assert "is used up" in problems[0]   # refused without starting
  assert len(json.load(open(os.path.join(root, "tiny_small_e2", "launch.json")))["sessions"]) == 1
