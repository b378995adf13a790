r"""Runs a sweep: every point of a config's `get_sweep()` as its own training run.

  python -m experiments.sweep --config=experiments/configs/ablation_beta.py --workdir=workdirs/beta
  python -m experiments.sweep --config=... --workdir=... --parallel=2
  python -m experiments.sweep --config=... --workdir=... --dry_run     # print the commands only
  python -m experiments.sweep --config=... --workdir=... --aggregate_only
  python -m experiments.sweep --config=... --workdir=... --results=experiments/results/ablation_beta

Point p runs `python -m experiments.train --config=<config> --config.<field>=<value> ...
--workdir=<workdir>/<sweeps.point_name(p)>` in a subprocess (its output goes to
`sweep.log` in that folder). A point whose `results.json` exists is finished
and skipped; any other is (re)started with the same command, which resumes it
from its newest checkpoint, so an interrupted sweep continues where it
stopped when relaunched. Every point's config is built and validated before
anything runs. At the end the finished points are aggregated over seeds into
`<workdir>/sweep.{csv,json,md,png}` (and `<results>.{csv,json,md,png}` with
--results). Exit status 1 if any point failed (its log is named).
"""

import concurrent.futures
import importlib.util
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

from absl import flags

from experiments import cli
from vae_jax.run import metrics as metrics_lib

_CONFIG = flags.DEFINE_string("config", None, "Config file with get_config() and get_sweep(), as path[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder that receives one sub-workdir per point.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Points trained at the same time (processes).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the command line of every unfinished point and exit.")
_AGGREGATE_ONLY = flags.DEFINE_bool("aggregate_only", False, "Only aggregate the finished points; run nothing.")
_RESULTS = flags.DEFINE_string("results", "", "Also write the aggregate to <results>.{csv,json,md,png}.")
flags.mark_flags_as_required(["config", "workdir"])

# Base-config fields that state the scale of a sweep in its results.
SCALE_FIELDS = ("data.name", "data.train_subset", "training.num_epochs", "training.batch_size",
                "eval.num_examples", "eval.is_num_samples")


def load_sweep(config_arg: str):
  """(base config, points) of `path[:arg]`; ValueError naming the problem."""
  path, _, arg = config_arg.partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"--config={config_arg}: no file {path}; give the path of a config file.")
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"--config={config_arg}: {path} has no get_sweep(); add one returning a list"
                     " of override dicts (see vae_jax.scale.sweeps).")
  config = module.get_config(arg) if arg else module.get_config()
  points = module.get_sweep(arg) if arg else module.get_sweep()
  return config, list(points)


def check_points(config, points) -> list[str]:
  """Builds and validates the config of every point; returns their names."""
  from vae_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from vae_jax.scale import sweeps  # pylint: disable=g-import-not-at-top
  from vae_jax.models import build  # pylint: disable=g-import-not-at-top
  names = sweeps.check_names(points)
  for point, name in zip(points, names):
    try:
      point_config = sweeps.apply(config, point)
      config_lib.validate(point_config)
      build.build_model(point_config)
    except (KeyError, TypeError, ValueError) as e:
      message = str(e).strip().splitlines()[0]
      raise ValueError(f"sweep point {name}: {message}") from None
  return names


def command(config_arg: str, point: dict, workdir: str, python: str = sys.executable) -> list[str]:
  from vae_jax.scale import sweeps  # pylint: disable=g-import-not-at-top
  return [python, "-m", "experiments.train", f"--config={config_arg}",
          *sweeps.override_flags(point), f"--workdir={workdir}"]


_RUNNING: set = set()      # the training processes started and not yet finished
_STOPPING = threading.Event()


def run_point(argv: list[str], workdir: str) -> tuple[int, float]:
  """Runs one point, appending its output to <workdir>/sweep.log; (exit code, seconds)."""
  os.makedirs(workdir, exist_ok=True)
  start = time.time()
  with open(os.path.join(workdir, "sweep.log"), "a") as log:
    log.write(f"$ {shlex.join(argv)}\n")
    log.flush()
    if _STOPPING.is_set():
      return -1, 0.0
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    _RUNNING.add(process)
    if _STOPPING.is_set():   # stopped while this process was starting
      process.terminate()
    code = process.wait()
    _RUNNING.discard(process)
  return code, time.time() - start


def _stop_running_points(*_):
  """SIGTERM/SIGINT: start no new point and end the running ones (they resume on relaunch)."""
  _STOPPING.set()
  for process in list(_RUNNING):
    process.terminate()
  raise KeyboardInterrupt


def _last_line(path: str) -> str:
  with open(path, errors="replace") as f:
    lines = [l.strip() for l in f.read().replace("\r", "\n").splitlines() if l.strip()]
  return lines[-1] if lines else "(no output)"


def write_aggregate(config, config_arg: str, points, workdir: str, results: str = "") -> list[dict]:
  """Aggregates the finished points into <workdir>/sweep.* and <results>.* (csv, json, md, png)."""
  from vae_jax.scale import sweeps  # pylint: disable=g-import-not-at-top
  records = sweeps.load_results(workdir, points)
  rows = sweeps.aggregate(records)
  launch = f"python -m experiments.sweep --config={config_arg} --workdir={workdir}"
  launch += f" --results={results}" if results else ""
  prefixes = [os.path.join(workdir, "sweep")] + ([results] if results else [])
  scale = {field: config[field.split(".")[0]][field.split(".")[1]] for field in SCALE_FIELDS}
  finished = sum(r["results"] is not None for r in records)
  header = {"config": config_arg, "command": launch, "scale": scale,
            "points_finished": finished, "points_total": len(points)}
  scale_text = ", ".join(f"{k}={v}" for k, v in scale.items())
  markdown = (f"Sweep `{config_arg}`: {finished} of {len(points)} points finished.\n\n"
              f"Command: `{launch}`\n\nScale (base config): {scale_text}.\n\n"
              "Test metrics in nats per image, mean ± std (ddof 1) over seeds; recon = E_q log p(x|z),"
              " kl = KL(q(z|x) ‖ p(z)), nll = −log p̂(x) with eval.is_num_samples importance samples;"
              " train_wall_time_s runs from the first step to the last (validation included, the final test evaluation not) and"
              " depends on the machine's load.\n\n"
              + sweeps.markdown_table(rows))
  for prefix in prefixes:
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    sweeps.write_csv(rows, prefix + ".csv")
    sweeps.write_json(rows, prefix + ".json", **header)
    with open(prefix + ".md", "w") as f:
      f.write(markdown)
    if rows:
      sweeps.plot(rows, prefix + ".png", title=f"{config_arg} ({scale_text})")
  return rows


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}; overrides belong in get_sweep().")
  if _PARALLEL.value < 1:
    raise ValueError(f"--parallel={_PARALLEL.value}: must be ≥ 1.")
  config_arg, workdir = _CONFIG.value, _WORKDIR.value
  config, points = load_sweep(config_arg)
  names = check_points(config, points)
  todo = [(point, name) for point, name in zip(points, names)
          if metrics_lib.read_results(os.path.join(workdir, name, "results.json")) is None]
  if _DRY_RUN.value:
    for point, name in todo:
      print(shlex.join(command(config_arg, point, os.path.join(workdir, name), python="python")))
    return
  if _AGGREGATE_ONLY.value:
    print(f"{len(points)} points, {len(points) - len(todo)} finished; aggregating only", flush=True)
    todo = []
  else:
    print(f"{len(points)} points, {len(points) - len(todo)} finished, {len(todo)} to run"
          f" ({_PARALLEL.value} at a time) in {workdir}", flush=True)
  failed = []
  signal.signal(signal.SIGTERM, _stop_running_points)
  signal.signal(signal.SIGINT, _stop_running_points)
  try:
    with concurrent.futures.ThreadPoolExecutor(_PARALLEL.value) as pool:
      futures = {pool.submit(run_point, command(config_arg, p, os.path.join(workdir, n)),
                             os.path.join(workdir, n)): n for p, n in todo}
      for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
        name = futures[future]
        code, seconds = future.result()
        log = os.path.join(workdir, name, "sweep.log")
        status = "done" if code == 0 else f"FAILED (exit {code}): {_last_line(log)}"
        print(f"[{done}/{len(todo)}] {name}: {status} ({seconds:.0f} s)", flush=True)
        if code:
          failed.append(log)
  except KeyboardInterrupt:
    print("error: interrupted; the running points were stopped, rerun the same command to resume"
          " them from their checkpoints.", file=sys.stderr, flush=True)
    sys.exit(1)
  rows = write_aggregate(config, config_arg, points, workdir, _RESULTS.value)
  print(f"aggregated {len(rows)} groups into {os.path.join(workdir, 'sweep.md')}"
        + (f" and {_RESULTS.value}.md" if _RESULTS.value else ""))
  if failed:
    raise ValueError(f"{len(failed)} point(s) failed, see {', '.join(failed)}; fix and rerun the same command.")


if __name__ == "__main__":
  cli.run(main)
