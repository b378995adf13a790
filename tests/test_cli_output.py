"""What the command lines print and where they write (issue 19: a newcomer's first hour)."""
import json
import logging as std_logging
import os
import sys

from absl import logging
import pytest

from experiments import train as train_cli
from test_reliability import assert_one_line_error, run, snapshot, train_command


@pytest.fixture(scope="module")
def cli_run(raw_data, tfds_data_dir, tmp_path_factory):
  """A tiny run trained by `python -m experiments.train`, and what it printed."""
  workdir = tmp_path_factory.mktemp("cli") / "run"
  result = run(train_command(workdir, raw_data, tfds_data_dir, "--config.training.num_epochs=1",
                             "--config.eval.write_figures=True"))
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result


def test_end_of_run_says_where_everything_is(cli_run):
  workdir, result = cli_run
  lines = result.stdout.strip().splitlines()
  results = json.loads((workdir / "results.json").read_text())
  assert lines[0] == f"Trained 1 epochs ({results['step']} steps) in {results['train_wall_time_s']:.0f} s."
  assert lines[1] == (f"Test (100 images): −ELBO {results['neg_elbo']:.2f} ± {results['neg_elbo_stderr']:.2f}"
                      f" nats, IS-NLL {results['nll']:.2f} ± {results['nll_stderr']:.2f} nats")
  for label, name in (("results:", "results.json"), ("metrics:", "metrics.jsonl"),
                      ("figures:", "figures/"), ("checkpoints:", "checkpoints/"), ("log:", "log.txt")):
    assert any(l.split() == [label, f"{workdir}/{name}"] for l in lines), (label, lines)
  assert (workdir / "log.txt").stat().st_size > 0
  assert "images:" not in result.stdout and "TensorBoard" not in result.stdout   # both off here


def test_rerunning_a_finished_run_says_so_and_changes_nothing(cli_run, raw_data, tfds_data_dir):
  workdir, _ = cli_run
  before = {k: v for k, v in snapshot(workdir).items() if k != "log.txt"}
  result = run(train_command(workdir, raw_data, tfds_data_dir, "--config.training.num_epochs=1",
                             "--config.eval.write_figures=True"))
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.startswith(f"{workdir} already holds a finished run (results.json);"
                                  " nothing was trained.")
  assert {k: v for k, v in snapshot(workdir).items() if k != "log.txt"} == before


@pytest.fixture
def absl_console():
  """absl's stderr handler on the root logger, as `app.run` installs it in a command."""
  logging.use_absl_handler()
  yield
  std_logging.getLogger().removeHandler(logging.get_absl_handler())


def test_library_chatter_goes_to_the_log_file_not_the_console(tmp_path, capfd, absl_console):
  del absl_console
  workdir = tmp_path / "run"
  workdir.mkdir()
  with train_cli._run_log(str(workdir), verbose=False) as run_log:  # pylint: disable=protected-access
    run_log.primary = True
    with train_cli._quiet():  # pylint: disable=protected-access
      os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on.\n")     # C++, like TensorFlow
      print("Downloading and preparing dataset Unknown size", flush=True)       # like TFDS
    logging.info("Saving checkpoint")                                           # like orbax
    logging.warning("a real warning")
    assert not (workdir / "log.txt").exists()   # nothing is written before the run owns the workdir
    (workdir / "config.json").write_text("{}")   # training writes it once every check passed
    logging.info("after the checks")
  out, err = capfd.readouterr()
  assert "oneDNN" not in out + err and "Downloading" not in out + err and "Saving" not in out + err
  assert "a real warning" in err
  log = (workdir / "log.txt").read_text()
  for text in ("oneDNN custom operations", "Downloading and preparing", "Saving checkpoint",
               "a real warning", "after the checks"):
    assert text in log


def test_a_workdir_that_is_a_file_is_named_a_file(raw_data, tfds_data_dir, tmp_path):
  path = tmp_path / "results.txt"
  path.write_text("mine\n")
  result = run(train_command(path, raw_data, tfds_data_dir))
  assert_one_line_error(result, f"--workdir={path} is a file, not a folder")
  assert path.read_text() == "mine\n"


def test_compress_without_a_subcommand_is_an_error_line(tmp_path):
  for args in ([], ["frobnicate"]):
    result = run([sys.executable, "-m", "experiments.compress", f"--workdir={tmp_path}", *args])
    assert_one_line_error(result, "give one command, encode or decode")


def test_evaluate_names_its_file_by_every_setting(cli_run):
  workdir, _ = cli_run
  for args in (["--num_examples=20"], ["--num_examples=30", "--seed=7"]):
    result = run([sys.executable, "-m", "experiments.evaluate", f"--workdir={workdir}",
                  "--num_samples=5", *args])
    assert result.returncode == 0, result.stderr[-3000:]
  names = sorted(p.name for p in workdir.glob("evaluation_*.json"))
  assert names == ["evaluation_test_k5_n20_seed0.json", "evaluation_test_k5_n30_seed7.json"]
  assert json.loads((workdir / names[1]).read_text())["num_examples"] == 30


def test_applications_write_into_the_workdir_by_default(cli_run, tmp_path):
  from experiments import applications  # pylint: disable=g-import-not-at-top
  workdir, _ = cli_run
  assert applications.default_out([str(workdir)]) == os.path.join(workdir, "applications")
  parent = os.path.dirname(workdir)
  assert applications.default_out([str(workdir), os.path.join(parent, "other")]) == os.path.join(
      parent, "applications")
  with pytest.raises(ValueError, match="give --out"):
    applications.default_out(["/a", "/b"])
  applications.run("generation", [str(workdir)], applications.Options(num_examples=12))
  assert (workdir / "applications" / "generation.json").exists()
  assert len(list((workdir / "applications" / "generation").glob("*.png"))) == 4
