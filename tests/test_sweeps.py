"""Sweeps: grids, names, flags that parse back, aggregation numbers, and the launcher."""
import csv
import json
import os
import pathlib
import shlex
import signal
import statistics
import subprocess
import sys
import time

from absl import flags
from ml_collections import config_flags
import pytest

from vae_jax import config as config_lib
from vae_jax.scale import sweeps

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_product_zip_and_chain():
  grid = sweeps.product(sweeps.sweep("model.activation", ["relu", "elu"]), sweeps.sweep("seed", [0, 1, 2]))
  assert len(grid) == 6
  assert grid[0] == {"model.activation": "relu", "seed": 0}
  assert grid[4] == {"model.activation": "elu", "seed": 1}
  zipped = sweeps.zip_sweeps(sweeps.sweep("model.latent_dim", [2, 8]), sweeps.sweep("seed", [5, 6]))
  assert zipped == [{"model.latent_dim": 2, "seed": 5}, {"model.latent_dim": 8, "seed": 6}]
  assert sweeps.chain(grid[:1], zipped) == [grid[0]] + zipped
  with pytest.raises(ValueError, match="equal length"):
    sweeps.zip_sweeps(sweeps.sweep("seed", [0]), sweeps.sweep("objective.beta", [1.0, 2.0]))
  with pytest.raises(ValueError, match="set by two axes"):
    sweeps.product(sweeps.sweep("seed", [0]), sweeps.sweep("seed", [1]))


def test_point_names():
  assert sweeps.point_name({"model.hidden_widths": (512, 256), "seed": 1}) == "hidden_widths=512-256,seed=1"
  assert sweeps.point_name({"model.hidden_widths": ()}) == "hidden_widths=none"
  assert sweeps.point_name({"objective.beta": 0.25, "model.activation": "leaky_relu"}) == \
      "beta=0.25,activation=leaky_relu"
  assert sweeps.point_name({"a.x": 1, "b.x": "p/q r"}) == "a.x=1,b.x=p_q_r"
  assert sweeps.point_name({}) == "base"
  with pytest.raises(ValueError, match="same name"):
    sweeps.check_names([{"a.x": 1}, {"b.x": 2}, {"c.x": 1}])


def test_override_flags_parse_back_to_the_point():
  point = {"model.hidden_widths": (64,), "model.latent_dim": 3, "objective.beta": 0.5,
           "model.activation": "gelu", "optimizer.learning_rate": 3e-4, "training.progress_bar": False}
  flag_values = flags.FlagValues()
  argv = ["prog", f"--config={REPO / 'experiments' / 'configs' / 'default.py'}",
          *sweeps.override_flags(point)]
  config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  parsed = flag_values.config
  applied = sweeps.apply(config_lib.default_config(), point)
  assert parsed.model.hidden_widths != config_lib.default_config().model.hidden_widths
  for field, value in point.items():
    section, name = field.split(".")
    assert parsed[section][name] == value == applied[section][name], field
  assert sweeps.override_flags({"model.hidden_widths": ()}) == ["--config.model.hidden_widths=()"]
  with pytest.raises(KeyError):
    sweeps.apply(config_lib.default_config(), {"model.latent_dm": 2})


def _write_results(workdir, point, **results):
  path = workdir / sweeps.point_name(point)
  path.mkdir(parents=True)
  (path / "results.json").write_text(json.dumps(results))


def test_aggregate_mean_and_std_over_seeds(tmp_path):
  points = sweeps.product(sweeps.sweep("objective.beta", [0.5, 2.0]), sweeps.sweep("seed", [0, 1, 2]))
  values = {0.5: [90.0, 92.5, 91.0], 2.0: [101.0, 99.0, None]}    # None: point unfinished
  for point in points:
    value = values[point["objective.beta"]][point["seed"]]
    if value is not None:
      _write_results(tmp_path, point, neg_elbo=value, nll=value - 3, kl=10.0 + point["seed"], recon=-80.0)
  rows = sweeps.aggregate(sweeps.load_results(str(tmp_path), points))
  assert [r["point"] for r in rows] == [{"objective.beta": 0.5}, {"objective.beta": 2.0}]
  assert [r["num_seeds"] for r in rows] == [3, 2]
  assert rows[0]["neg_elbo_mean"] == pytest.approx(statistics.mean([90.0, 92.5, 91.0]))
  assert rows[0]["neg_elbo_std"] == pytest.approx(statistics.stdev([90.0, 92.5, 91.0]))
  assert rows[1]["nll_mean"] == pytest.approx(97.0) and rows[1]["nll_std"] == pytest.approx(2 ** 0.5)
  assert rows[1]["kl_values"] == [10.0, 11.0]
  assert "train_wall_time_s_mean" not in rows[0]     # absent from the results: not reported
  table = sweeps.markdown_table(rows)
  assert "| objective.beta | seeds | neg_elbo | nll | recon | kl |" in table
  assert "| 0.5 | 3 | 91.17 ± 1.26 | 88.17 ± 1.26 | -80.00 ± 0.00 | 11.00 ± 1.00 |" in table
  sweeps.write_csv(rows, str(tmp_path / "out.csv"))
  lines = list(csv.DictReader(open(tmp_path / "out.csv")))
  assert lines[1]["objective.beta"] == "2.0" and float(lines[1]["neg_elbo_mean"]) == 100.0
  single = sweeps.aggregate(sweeps.load_results(str(tmp_path), points[:1]))
  assert single[0]["neg_elbo_std"] is None and "91.17" not in sweeps.markdown_table(single)
  sweeps.plot(rows, str(tmp_path / "plot.png"))
  assert (tmp_path / "plot.png").stat().st_size > 1000


SWEEP_CONFIG = '''
import sys
sys.path.insert(0, {tests!r})
from conftest import tiny_config
from vae_jax.scale import sweeps

def get_config(arg=""):
  return tiny_config({raw!r}, {tfds!r}, training__num_epochs=2, eval__num_examples=100,
                     eval__is_num_samples=20, eval__is_chunk_size=20)

def get_sweep(arg=""):
  return sweeps.product(sweeps.sweep("model.latent_dim", {latent}), sweeps.sweep("seed", [0, 1]))
'''


def _sweep(config_file, workdir, *args, env=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu", **(env or {}))
  return subprocess.run([sys.executable, "-m", "experiments.sweep", f"--config={config_file}",
                         f"--workdir={workdir}", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, check=False, timeout=600)


def test_sweep_dry_run_run_skip_and_resume(raw_data, tfds_data_dir, tmp_path):
  config_file = tmp_path / "tiny_sweep.py"
  config_file.write_text(SWEEP_CONFIG.format(tests=str(REPO / "tests"), raw=str(raw_data),
                                             tfds=str(tfds_data_dir), latent=[2]))
  workdir = tmp_path / "sweep"
  # An interrupted point: seed 1 trained for 1 of its 2 epochs, no results.json.
  interrupted = workdir / "latent_dim=2,seed=1"
  subprocess.run([sys.executable, "-m", "experiments.train", f"--config={config_file}",
                  "--config.model.latent_dim=2", "--config.seed=1", "--config.training.num_epochs=1",
                  f"--workdir={interrupted}"], cwd=REPO, check=True, capture_output=True)
  os.remove(interrupted / "results.json")

  dry = _sweep(config_file, workdir, "--dry_run")
  assert dry.returncode == 0, dry.stderr
  commands = dry.stdout.strip().splitlines()
  assert len(commands) == 2 and all(c.startswith("python -m experiments.train") for c in commands)
  assert shlex.split(commands[1])[-2:] == ["--config.seed=1", f"--workdir={interrupted}"]
  assert not (workdir / "latent_dim=2,seed=0").exists()

  run = _sweep(config_file, workdir, "--parallel=2", f"--results={tmp_path / 'out' / 'tiny'}")
  assert run.returncode == 0, run.stderr
  assert "2 points, 0 finished, 2 to run" in run.stdout
  records = [json.loads(l) for l in open(interrupted / "metrics.jsonl")]
  assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, 33))  # resumed at 17
  summary = json.load(open(tmp_path / "out" / "tiny.json"))
  assert summary["header"]["points_finished"] == 2 and summary["rows"][0]["num_seeds"] == 2
  results = [json.load(open(workdir / f"latent_dim=2,seed={s}" / "results.json")) for s in (0, 1)]
  assert summary["rows"][0]["nll_mean"] == pytest.approx((results[0]["nll"] + results[1]["nll"]) / 2)
  for suffix in ("csv", "md", "png"):
    assert (workdir / f"sweep.{suffix}").exists() and (tmp_path / "out" / f"tiny.{suffix}").exists()

  again = _sweep(config_file, workdir)
  assert again.returncode == 0 and "2 points, 2 finished, 0 to run" in again.stdout
  assert json.load(open(workdir / "latent_dim=2,seed=0" / "results.json")) == results[0]


def test_sweep_rejects_a_bad_point_before_running_anything(raw_data, tfds_data_dir, tmp_path):
  config_file = tmp_path / "bad_sweep.py"
  config_file.write_text(SWEEP_CONFIG.format(tests=str(REPO / "tests"), raw=str(raw_data),
                                             tfds=str(tfds_data_dir), latent=[2, 64]))
  bad = _sweep(config_file, tmp_path / "sweep")
  assert bad.returncode == 1
  assert bad.stderr.strip().splitlines() == [bad.stderr.strip()]
  assert bad.stderr.startswith("error: sweep point latent_dim=64,seed=0:") and "Lemma 2.1.1" in bad.stderr
  assert not (tmp_path / "sweep").exists()


def test_jobs_group_a_points_seeds_at_the_same_step(tmp_path):
  from experiments import sweep
  points = sweeps.product(sweeps.sweep("model.latent_dim", [2, 3]), sweeps.sweep("seed", [0, 1, 2]))
  todo = list(zip(points, sweeps.check_names(points)))
  (tmp_path / "latent_dim=3,seed=2" / "checkpoints" / "16").mkdir(parents=True)   # further on
  (tmp_path / "latent_dim=3,seed=2" / "checkpoints" / "24.orbax-checkpoint-tmp").mkdir()
  overrides = ["--config.training.num_epochs=1"]
  jobs = sweep.plan_jobs("c.py", todo, str(tmp_path), overrides, together=True, python="python")
  assert [job.names for job in jobs] == [
      ["latent_dim=2,seed=0", "latent_dim=2,seed=1", "latent_dim=2,seed=2"],
      ["latent_dim=3,seed=0", "latent_dim=3,seed=1"], ["latent_dim=3,seed=2"]]
  assert jobs[1].argv == ["python", "-m", "experiments.sweep", "--config=c.py", f"--workdir={tmp_path}",
                          "--train_points=latent_dim=3,seed=0", "--train_points=latent_dim=3,seed=1",
                          "--", *overrides]
  assert jobs[2].argv[:5] == ["python", "-m", "experiments.train", "--config=c.py", *overrides]
  assert jobs[1].log == str(tmp_path / "latent_dim=3,seed=0" / "sweep.log")
  separate = sweep.plan_jobs("c.py", todo, str(tmp_path), overrides, together=False)
  assert [job.names for job in separate] == [[name] for _, name in todo]


def _records(workdir, split):
  return [r for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
          if r["split"] == split]


def test_seeds_together_equal_separate_points_resume_and_take_the_overrides(
    raw_data, tfds_data_dir, tmp_path):
  config_file = tmp_path / "tiny_sweep.py"
  config_file.write_text(SWEEP_CONFIG.format(tests=str(REPO / "tests"), raw=str(raw_data),
                                             tfds=str(tfds_data_dir), latent=[2]))
  override = ["--", "--config.eval.is_num_samples=10"]
  separate = _sweep(config_file, tmp_path / "separate", "--parallel=2", *override)
  assert separate.returncode == 0, separate.stderr
  # The program training both seeds is SIGKILLed after their checkpoints of step 16 of 32.
  killed = _sweep(config_file, tmp_path / "together", "--seeds_together", *override,
                  env={"PYTHONPATH": str(REPO / "tests" / "fault_injection"),
                       "VAE_JAX_KILL_AT": "after rename */latent_dim=2,seed=1/checkpoints/16.orbax-checkpoint-tmp"})
  assert killed.returncode == 1 and "FAILED (-9)" in killed.stdout, killed.stdout + killed.stderr
  before = [_records(tmp_path / "together" / f"latent_dim=2,seed={s}", "validation") for s in (0, 1)]
  assert [[r["step"] for r in records] for records in before] == [[16], [16]]
  together = _sweep(config_file, tmp_path / "together", "--seeds_together", *override)
  assert together.returncode == 0, together.stderr
  assert "latent_dim=2,seed=0 and 1 more seed(s) together: done" in together.stdout
  for seed in (0, 1):   # resumed: the first run's record of epoch 1 (its wall_time too) is kept
    assert _records(tmp_path / "together" / f"latent_dim=2,seed={seed}", "validation")[0] == before[seed][0]
  for seed in (0, 1):
    one, vmapped = (tmp_path / way / f"latent_dim=2,seed={seed}" for way in ("separate", "together"))
    assert json.load(open(one / "config.json")) == json.load(open(vmapped / "config.json"))
    assert json.load(open(one / "config.json"))["eval"]["is_num_samples"] == 10      # the override
    expected, got = (json.load(open(w / "results.json")) for w in (one, vmapped))
    assert got.pop("trained_together") == 2
    for key in ("step", "epochs", "skipped_updates", "num_test_examples", "num_examples"):
      assert got[key] == expected[key], key
    for key in ("neg_elbo", "nll", "recon", "kl", "neg_elbo_stderr", "nll_stderr"):   # float rounding
      assert got[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-6), key
    for split in ("train", "validation", "test"):
      want, have = _records(one, split), _records(vmapped, split)
      assert [r["step"] for r in have] == [r["step"] for r in want] != []   # resumed without gaps
      for a, b in zip(want, have):
        for key in ("loss", "neg_elbo", "kl", "nll"):
          if key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-5), (split, key)
  header = json.load(open(tmp_path / "together" / "sweep.json"))["header"]
  assert header["launcher"]["seeds_together"] is True and header["launcher"]["overrides"] == override[1:]
  assert header["scale"]["eval.is_num_samples"] == 10
  assert header["command"].endswith("--seeds_together -- --config.eval.is_num_samples=10")
  assert "--parallel=2" in json.load(open(tmp_path / "separate" / "sweep.json"))["header"]["command"]

  # Relaunched without the override, the finished points would be taken for k=20 ones: refused.
  finished = (tmp_path / "separate" / "latent_dim=2,seed=0" / "results.json").read_bytes()
  stale = _sweep(config_file, tmp_path / "separate")
  assert stale.returncode == 1 and len(stale.stderr.strip().splitlines()) == 1, stale.stderr
  assert "was trained with other values of eval.is_num_samples;" in stale.stderr
  assert (tmp_path / "separate" / "latent_dim=2,seed=0" / "results.json").read_bytes() == finished


def test_bad_overrides_fail_in_one_line_before_anything_runs(raw_data, tfds_data_dir, tmp_path):
  config_file = tmp_path / "tiny_sweep.py"
  config_file.write_text(SWEEP_CONFIG.format(tests=str(REPO / "tests"), raw=str(raw_data),
                                             tfds=str(tfds_data_dir), latent=[2]))
  for overrides, message in ((["--config.training.num_epoch=1"], "did you mean 'num_epochs'?"),
                             (["--config.seed=3"], "sets seed, which the sweep varies"),
                             (["num_epochs=1"], "give overrides as --config.<field>=<value>"),
                             (["--config.training.num_epochs=one"], "invalid literal for int()")):
    bad = _sweep(config_file, tmp_path / "sweep", "--", *overrides)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert bad.stderr.startswith("error: override") and message in bad.stderr, bad.stderr
  assert not (tmp_path / "sweep").exists()
  dry = _sweep(config_file, tmp_path / "sweep", "--dry_run", "--", "--config.training.num_epochs=1")
  assert [shlex.split(c)[4] for c in dry.stdout.strip().splitlines()] == ["--config.training.num_epochs=1"] * 2


def _children(pid: int) -> list[int]:
  children = []
  for entry in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{entry}/stat") as f:
        if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
          children.append(int(entry))
    except (OSError, IndexError, ValueError):
      pass
  return children


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_a_killed_launcher_leaves_no_training_process_behind(raw_data, tfds_data_dir, tmp_path):
  """SIGKILL to the launcher alone ends its points too (no orphan keeps writing their workdirs)."""
  config_file = tmp_path / "tiny_sweep.py"
  config_file.write_text(SWEEP_CONFIG.format(tests=str(REPO / "tests"), raw=str(raw_data),
                                             tfds=str(tfds_data_dir), latent=[2]))
  launcher = subprocess.Popen([sys.executable, "-m", "experiments.sweep", f"--config={config_file}",
                               f"--workdir={tmp_path / 'sweep'}", "--parallel=2"], cwd=REPO,
                              env=dict(os.environ, JAX_PLATFORMS="cpu"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
  points = []
  try:
    deadline = time.time() + 300
    while len(points) < 2 and time.time() < deadline and launcher.poll() is None:
      points = _children(launcher.pid)
      time.sleep(0.2)
    assert len(points) == 2, "the launcher started no two training processes"
  finally:
    launcher.kill()
    launcher.wait()
  deadline = time.time() + 10
  while any(map(_alive, points)) and time.time() < deadline:
    time.sleep(0.1)
  survivors = [pid for pid in points if _alive(pid)]
  for pid in survivors:   # clean up after a failure
    os.kill(pid, signal.SIGKILL)
  assert not survivors
