r"""The sweep launcher's overhead per point (local and Ray), and seeds trained together.

  python -m benchmarks.sweep_benchmark          # writes benchmarks/results/sweep_benchmark.{json,md}
  python -m benchmarks.sweep_benchmark --points=4 --repeats=3 --epochs=1 --train_subset=2000

One sweep of `--points` seeds of `default.py:quick` shrunk to `--epochs` on
`--train_subset` images is run four ways, interleaved round by round (fresh
workdirs each time, so every point trains and evaluates in full):

* local: `python -m experiments.sweep` (`--parallel=1`, one point at a time);
* ray: `--executor=ray` on a one-node Ray cluster with 1 CPU (one point at a
  time too), started once beforehand (its start time is reported apart);
* aggregate_only: `--aggregate_only` on local's finished sweep: start-up,
  config checks and aggregation, what a launch costs without any point;
* together: `--seeds_together`: the N seeds as one vmapped program.

The launcher prints how long each point's `experiments.train` process ran
(from its start to its exit, measured where it runs). Its overhead is the
rest of the sweep's wall time: overhead per point = (sweep wall − Σ point
times) / N, taken within one sweep, so that the machine's load slows both
sides of the difference alike. The goal is < 5 % of a one-minute point (3 s).
On a shared machine the load average is recorded with the times.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from absl import flags

from benchmarks import timing

REPO = pathlib.Path(__file__).resolve().parents[1]
RAY = pathlib.Path(sys.executable).parent / "ray"
GOAL_S = 0.05 * 60   # < 5 % of a one-minute point

SWEEP = """
from experiments.configs import default
from vae_jax.scale import sweeps

def get_config(arg=""):
  config = default.get_config("quick")
  config.data.train_subset = {train_subset}
  config.training.num_epochs = {epochs}
  config.training.progress_bar = False
  config.training.tensorboard = False
  config.eval.num_examples = {eval_examples}
  config.eval.is_num_samples = {is_samples}
  config.eval.write_images = False
  return config

def get_sweep(arg=""):
  return sweeps.sweep("seed", range({points}))
"""


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so tests can import the module)."""
  flags.DEFINE_integer("points", 4, "Points (seeds) in the sweep.")
  flags.DEFINE_integer("repeats", 3, "Interleaved rounds (the median is reported).")
  flags.DEFINE_integer("epochs", 1, "Training epochs of every point.")
  flags.DEFINE_integer("train_subset", 2000, "Training images of every point.")
  flags.DEFINE_integer("eval_examples", 500, "Test images of every point.")
  flags.DEFINE_integer("is_samples", 100, "IS-NLL samples of every point's test evaluation.")
  flags.DEFINE_string("out", str(REPO / "benchmarks" / "results"), "Folder for sweep_benchmark.{json,md}.")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class LocalCluster:
  """A Ray cluster on this machine: `ray start --head` and `nodes − 1` × `ray start --address`.

  Each node is a `ray start --block` in a session of its own, so that `stop`
  ends exactly the processes of this cluster (by their ids; `ray stop` would
  end every Ray process of the machine by name).
  """

  def __init__(self, nodes: int = 1, cpus_per_node: int = 1, env: dict | None = None, attempts: int = 2):
    # On a loaded machine a node can die while it starts (seen once in CI): start afresh once more.
    for attempt in range(attempts):
      try:
        return self._launch(nodes, cpus_per_node, env)
      except RuntimeError:
        if attempt == attempts - 1:
          raise

  def _launch(self, nodes: int, cpus_per_node: int, env: dict | None) -> None:
    self.temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")   # short: Ray's socket paths have a limit
    self.port = free_port()
    self.address = f"127.0.0.1:{self.port}"
    self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", **(env or {}))
    self.nodes = []
    common = [f"--num-cpus={cpus_per_node}", "--block", "--disable-usage-stats", f"--temp-dir={self.temp_dir}"]
    self._start(["--head", f"--port={self.port}", "--include-dashboard=false",
                 f"--ray-client-server-port={free_port()}", *common])
    self._wait(lambda: socket.create_connection(("127.0.0.1", self.port), timeout=1).close())
    for _ in range(nodes - 1):
      self._start([f"--address={self.address}", *common])
    self._wait(lambda: self._count_nodes(nodes))

  def _start(self, args):
    with open(os.path.join(self.temp_dir, f"node{len(self.nodes)}.log"), "w") as log:
      self.nodes.append(subprocess.Popen(
          [str(RAY), "start", *args, f"--dashboard-agent-listen-port={free_port()}"], stdout=log,
          stderr=subprocess.STDOUT, env=self.env, start_new_session=True))

  def _count_nodes(self, expected: int):
    status = subprocess.run([str(RAY), "status", f"--address={self.address}"], env=self.env,
                            capture_output=True, text=True, check=True)
    assert status.stdout.count("node_") == expected

  def _wait(self, ready, timeout: float = 180):
    deadline = time.time() + timeout
    while True:
      try:
        return ready()
      except (OSError, AssertionError, subprocess.CalledProcessError):
        if time.time() > deadline or any(node.poll() is not None for node in self.nodes):
          self.stop()
          raise RuntimeError(f"the Ray cluster at {self.address} did not start;"
                             f" see {self.temp_dir}/node*.log") from None
        time.sleep(0.5)

  def stop(self):
    """SIGTERM to each `ray start --block` (it stops its node), then SIGKILL what is left of its session."""
    for node in reversed(self.nodes):
      node.terminate()
    for node in reversed(self.nodes):
      try:
        node.wait(30)
      except subprocess.TimeoutExpired:
        pass
    sessions = {node.pid for node in self.nodes}
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
      try:
        if os.getsid(pid) in sessions:
          os.kill(pid, signal.SIGKILL)
      except (ProcessLookupError, PermissionError):
        pass
    shutil.rmtree(self.temp_dir, ignore_errors=True)


def _run(argv, env=None):
  result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env=env, check=False)
  if result.returncode:
    raise RuntimeError(f"{shlex.join(argv)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
  return result.stdout


POINT_LINE = re.compile(r"^\[\d+/\d+\] (.*): done \(([\d.]+) s")


def measure(args, root: pathlib.Path) -> dict:
  config = root / "sweep_config.py"
  config.write_text(SWEEP.format(points=args.points, epochs=args.epochs, train_subset=args.train_subset,
                                 eval_examples=args.eval_examples, is_samples=args.is_samples))
  sweep = [sys.executable, "-m", "experiments.sweep", f"--config={config}"]

  def run(name, *flags_):
    shutil.rmtree(root / name, ignore_errors=True)
    return _run([*sweep, f"--workdir={root / name}", *flags_])

  start = time.perf_counter()
  cluster = LocalCluster(nodes=1, cpus_per_node=1)
  cluster_start_s = time.perf_counter() - start
  ways = {"local": lambda: run("local"),
          "aggregate_only": lambda: _run([*sweep, f"--workdir={root / 'local'}", "--aggregate_only"]),
          "ray": lambda: run("ray", "--executor=ray", f"--ray_address={cluster.address}"),
          "together": lambda: run("together", "--seeds_together")}
  measured = {name: {"wall_s": [], "points_s": []} for name in ways}
  load = [os.getloadavg()[0]]
  try:
    for round_ in range(args.repeats):
      for name, way in ways.items():
        start = time.perf_counter()
        output = way()
        measured[name]["wall_s"].append(time.perf_counter() - start)
        measured[name]["points_s"].append(
            sum(float(m.group(2)) for m in map(POINT_LINE.match, output.splitlines()) if m))
        load.append(os.getloadavg()[0])
        print(f"round {round_ + 1} {name}: {measured[name]['wall_s'][-1]:.1f} s, points"
              f" {measured[name]['points_s'][-1]:.1f} s (load {load[-1]:.1f})", flush=True)
  finally:
    cluster.stop()
  return {"ways": measured, "cluster_start_s": cluster_start_s, "load_average_1min": load}


def summarize(args, measured: dict) -> dict:
  """Per-point overheads and the together ratio: medians over rounds of each round's value."""
  ways, n = measured["ways"], args.points
  overhead = {e: [(w - p) / n for w, p in zip(ways[e]["wall_s"], ways[e]["points_s"])]
              for e in ("local", "ray")}
  return {
      "point_s": statistics.median(ways["local"]["points_s"]) / n,
      "overhead_per_point_s": {e: statistics.median(v) for e, v in overhead.items()},
      "overhead_per_point_range_s": {e: [min(v), max(v)] for e, v in overhead.items()},
      "launch_without_points_s": statistics.median(ways["aggregate_only"]["wall_s"]),
      "together_speedup": statistics.median(
          [s / t for s, t in zip(ways["local"]["wall_s"], ways["together"]["wall_s"])]),
  }


def markdown(args, measured: dict, summary: dict, machine: dict) -> str:
  n, ways, load = args.points, measured["ways"], measured["load_average_1min"]
  cell = lambda values: f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"  # noqa: E731
  rows = [f"| {name} | {cell(way['wall_s'])} | {cell(way['points_s']) if any(way['points_s']) else '–'} |"
          for name, way in ways.items()]
  lines = [
      f"Sweep launcher, {machine['date']}, {machine['cpu']} ({machine['nproc']} cores), load average"
      f" (1 min) {min(load):.1f}–{max(load):.1f} during the run; command"
      f" `python -m benchmarks.sweep_benchmark --points={n} --repeats={args.repeats} --epochs={args.epochs}"
      f" --train_subset={args.train_subset} --eval_examples={args.eval_examples} --is_samples={args.is_samples}`.",
      "", f"{n} points (seeds) of `default.py:quick` with {args.epochs} epoch(s) on {args.train_subset} images,"
      f" test on {args.eval_examples} images (IS k={args.is_samples}); seconds, median (range) of"
      f" {args.repeats} interleaved rounds:", "",
      "| way | sweep wall | Σ point processes |", "| --- | --- | --- |", *rows, "",
      f"A point's process ran {summary['point_s']:.1f} s (median). The one-node Ray cluster took"
      f" {measured['cluster_start_s']:.1f} s to start (once, not in the times above).", "",
      "| goal | measured | met |", "| --- | --- | --- |"]
  for executor in ("local", "ray"):
    overhead = summary["overhead_per_point_s"][executor]
    low, high = summary["overhead_per_point_range_s"][executor]
    lines.append(f"| launcher overhead per point < 5% of a 1-minute point (< {GOAL_S:.0f} s), {executor}"
                 f" | {overhead:.2f} s = {100 * overhead / 60:.1f}% (rounds {low:.2f}–{high:.2f} s)"
                 f" | {'yes' if overhead < GOAL_S else 'NO'} |")
  lines += ["", f"Of that, a launch without points (`--aggregate_only`: start-up, config checks,"
            f" aggregation) costs {summary['launch_without_points_s']:.1f} s, i.e."
            f" {summary['launch_without_points_s'] / n:.1f} s per point over {n} points; it does not grow"
            " with the number of points, the rest does.",
            f"Seeds together (`--seeds_together`, one vmapped program) against the same sweep with"
            f" separate points (local): {summary['together_speedup']:.2f}× faster (JAX backend: CPU)."]
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  args = flags.FLAGS
  machine = timing.machine()
  with tempfile.TemporaryDirectory() as root:
    measured = measure(args, pathlib.Path(root))
  machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
  summary = summarize(args, measured)
  text = markdown(args, measured, summary, machine)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "sweep_benchmark.json").write_text(json.dumps(
      {"machine": machine, "command": shlex.join(["python", "-m", "benchmarks.sweep_benchmark", *sys.argv[1:]]),
       "measured": measured, "summary": summary}, indent=1))
  (out / "sweep_benchmark.md").write_text(text)
  print(text)


if __name__ == "__main__":
  from experiments import cli  # pylint: disable=g-import-not-at-top
  define_flags()
  cli.run(main)
