r"""Runs a sweep: every point of a config's `get_sweep()` as its own training run.

  python -m experiments.sweep --config=experiments/configs/ablation_beta.py --workdir=workdirs/beta
  python -m experiments.sweep --config=... --workdir=... --parallel=2
  python -m experiments.sweep --config=... --workdir=... --executor=ray --ray_address=auto \
      --cpus_per_point=4 --gpus_per_point=1                   # on a Ray cluster (BUILD.md)
  python -m experiments.sweep --config=... --workdir=... --seeds_together
  python -m experiments.sweep --config=... --workdir=... -- --config.training.num_epochs=1
  python -m experiments.sweep --config=... --workdir=... --dry_run     # print the commands only
  python -m experiments.sweep --config=... --workdir=... --aggregate_only
  python -m experiments.sweep --config=... --workdir=... --results=experiments/results/ablation_beta

Point p runs `python -m experiments.train --config=<config> <overrides>
--config.<field>=<value> ... --workdir=<workdir>/<sweeps.point_name(p)>` in a
subprocess (its output goes to `sweep.log` in that folder); <overrides>, the
arguments after `--`, apply to every point (they may not set a swept field).
A point whose `results.json` exists is finished and skipped; any other is
(re)started with the same command, which resumes it from its newest
checkpoint, so an interrupted sweep continues where it stopped when
relaunched. Every point's config is built and validated, and every finished
point's config.json compared with it, before anything runs. At the end the
finished points are aggregated over seeds into `<workdir>/sweep.{csv,json,md,png}`
(and `<results>.{csv,json,md,png}` with --results), whose header records this
command line and every launcher setting. Exit status 1 if any point failed
(its log is named).

Executors: `local` runs `--parallel` points at a time on this machine; `ray`
submits every point as a Ray task (`--cpus_per_point`, `--gpus_per_point`) to
the cluster at `--ray_address` (`auto`: the one this machine belongs to;
`local`: a new one on this machine; or HOST:PORT). The task runs the same
subprocess on its node, so the repository, the Python environment and the
workdir must be at the same paths on every node (a shared filesystem). Ray
retries a point whose worker or training process died (`--max_retries`); the
retry resumes from the point's newest checkpoint.

--seeds_together trains the unfinished seeds of each point (points equal up to
`seed`) as one vmapped program (`vae_jax.scale.seeds`), by a subprocess
`python -m experiments.sweep ... --train_points=<name> --train_points=<name> ...`;
each seed still writes its own workdir, with the results of a separate run up
to float rounding. Default: on when the points run on an accelerator (local:
JAX's default backend here; ray: --gpus_per_point > 0), off on CPU, where it
does not pay (README, "Seeds in one program").
"""

import concurrent.futures
import importlib.util
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import NamedTuple

from absl import flags
from ml_collections import config_flags

from experiments import cli
from vae_jax.run import metrics as metrics_lib


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Base-config fields that state the scale of a sweep in its results.
SCALE_FIELDS = ("data.name", "data.train_subset", "training.num_epochs", "training.batch_size",
                "eval.num_examples", "eval.is_num_samples")
# Passed from the launcher to Ray tasks (the data's location; all else comes from the node).
FORWARDED_ENV = ("VAE_JAX_RAW_DATA_DIR", "TFDS_DATA_DIR")


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


def apply_overrides(config, overrides: list[str], points):
  """`config` with the `--config.<field>=<value>` overrides, parsed as experiments.train parses them."""
  for override in overrides:
    field = override[len("--config."):].split("=", 1)[0]
    if not override.startswith("--config.") or "=" not in override:
      raise ValueError(f"override {override!r}: give overrides as --config.<field>=<value> after `--`,"
                       " e.g. -- --config.training.num_epochs=1")
    if any(field in point for point in points):
      raise ValueError(f"override {override!r} sets {field}, which the sweep varies; remove it"
                       " or change get_sweep().")
  flag_values = flags.FlagValues()
  argv = ["sweep", *overrides]
  try:
    config_flags.DEFINE_config_dict("config", config, flag_values=flag_values, sys_argv=argv)
    flag_values(argv)
  except (AttributeError, KeyError) as e:
    raise ValueError(f"override {cli._unknown_field(e, overrides)}") from None  # pylint: disable=protected-access
  except (flags.Error, TypeError, ValueError) as e:
    raise ValueError(f"override {cli._cause(e)}") from None  # pylint: disable=protected-access
  return flag_values.config


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


def command(config_arg: str, point: dict, workdir: str, overrides=(), python: str = sys.executable
            ) -> list[str]:
  """The `experiments.train` command line of one point."""
  from vae_jax.scale import sweeps  # pylint: disable=g-import-not-at-top
  return [python, "-m", "experiments.train", f"--config={config_arg}", *overrides,
          *sweeps.override_flags(point), f"--workdir={workdir}"]


def together_command(config_arg: str, workdir: str, names, overrides=(), python: str = sys.executable
                     ) -> list[str]:
  """The command line that trains the points `names` (equal up to their seed) as one program."""
  return [python, "-m", "experiments.sweep", f"--config={config_arg}", f"--workdir={workdir}",
          *[f"--train_points={name}" for name in names], "--", *overrides]


class Job(NamedTuple):
  """One subprocess: a point, or the seeds of a point trained together."""
  names: list
  argv: list
  log: str          # where its output goes: sweep.log of its first point


def plan_jobs(config_arg, todo, workdir, overrides, together: bool, python=sys.executable) -> list[Job]:
  """One job per unfinished point, or per group of seeds at the same step if `together`."""
  from vae_jax.scale import sweeps  # pylint: disable=g-import-not-at-top
  groups = {}
  for point, name in todo:
    key = (sweeps.point_name({k: v for k, v in point.items() if k != sweeps.SEED_FIELD}),
           sweeps.checkpoint_step(os.path.join(workdir, name))) if together else name
    groups.setdefault(key, []).append((point, name))
  jobs = []
  for members in groups.values():
    names = [name for _, name in members]
    log = os.path.join(workdir, names[0], "sweep.log")
    if len(members) == 1:
      point, name = members[0]
      argv = command(config_arg, point, os.path.join(workdir, name), overrides, python)
    else:
      argv = together_command(config_arg, workdir, names, overrides, python)
    jobs.append(Job(names, argv, log))
  return jobs


def _parent_death_signal():
  """A preexec_fn that SIGKILLs the child when the thread that started it dies (Linux), else None."""
  if not sys.platform.startswith("linux"):
    return None
  import ctypes  # pylint: disable=g-import-not-at-top
  prctl = ctypes.CDLL(None, use_errno=True).prctl
  return lambda: prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG: a dead Ray worker leaves no orphan


def run_point(argv, log_path: str, running=None, stopping=None, env=None) -> tuple[int, float]:
  """Runs one job in the repository, appending its output to `log_path`; (exit code, seconds).

  Used by both executors, so it references no launcher state (Ray pickles it).
  """
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  start = time.time()
  with open(log_path, "a") as log:
    log.write(f"$ {shlex.join(argv)}\n# on {socket.gethostname()}, pid {os.getpid()}\n")
    log.flush()
    if stopping is not None and stopping.is_set():
      return -1, 0.0
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                               env=dict(os.environ, **(env or {})), preexec_fn=_parent_death_signal())
    if running is not None:
      running.add(process)
      if stopping.is_set():   # stopped while this process was starting
        process.terminate()
    code = process.wait()
    if running is not None:
      running.discard(process)
  return code, time.time() - start


def ray_task(argv, log_path: str, env: dict) -> tuple[int, float, str]:
  """The Ray task of one job: `run_point` on the node; a killed process raises, so Ray retries it."""
  code, seconds = run_point(argv, log_path, env=env)
  if code < 0:
    raise ChildProcessError(f"{shlex.join(argv[:3])} was killed by signal {-code}")
  return code, seconds, socket.gethostname()


_RUNNING: set = set()      # the training processes started and not yet finished (local executor)
_STOPPING = threading.Event()


def _stop_running_points(*_):
  """SIGTERM/SIGINT: start no new point and end the running ones (they resume on relaunch)."""
  _STOPPING.set()
  for process in list(_RUNNING):
    process.terminate()
  raise KeyboardInterrupt


def run_local(jobs: list[Job], parallel: int, report) -> None:
  """Runs the jobs `parallel` at a time on this machine; `report(job, code, seconds, where)` each."""
  with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
    futures = {pool.submit(run_point, job.argv, job.log, _RUNNING, _STOPPING): job for job in jobs}
    for future in concurrent.futures.as_completed(futures):
      code, seconds = future.result()
      report(futures[future], code, seconds, "")


def run_ray(jobs: list[Job], report, address: str = "auto", cpus: float = 1.0, gpus: float = 0.0,
            max_retries: int = 3) -> None:
  """Submits every job as a Ray task to the cluster at `address`; reports them as they end.

  Each task reserves `cpus` CPUs and `gpus` GPUs; one whose worker or
  training process dies is run again, at most `max_retries` times.
  """
  import ray  # pylint: disable=g-import-not-at-top
  if __name__ != "__main__":   # imported (a test): ship this module's code to the workers
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's own task transport; no pickle of files
  fix = "start a cluster (BUILD.md, `ray start --head`) or give --ray_address=HOST:PORT of its head."
  host, _, port = address.rpartition(":")
  if port.isdigit():   # ray.init would retry an unreachable head for minutes
    try:
      socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
      raise ValueError(f"--ray_address={address}: no Ray head answers there ({e.strerror or e}); {fix}") from None
  try:
    ray.init(address=address, log_to_driver=False, logging_level="WARNING")
  except ConnectionError as e:
    raise ValueError(f"--ray_address={address}: {str(e).strip().splitlines()[0].rstrip('.')}; {fix}") from None
  task = ray.remote(ray_task).options(
      num_cpus=cpus, num_gpus=gpus, max_retries=max_retries,
      retry_exceptions=[ChildProcessError])
  env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
  pending = {task.remote(job.argv, job.log, env): job for job in jobs}
  try:
    while pending:
      done, _ = ray.wait(list(pending), num_returns=1)
      job = pending.pop(done[0])
      try:
        code, seconds, node = ray.get(done[0])
        report(job, code, seconds, f" on {node}")
      except ray.exceptions.RayError as e:
        cause = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        report(job, f"{type(e).__name__} after {max_retries} retries: {cause}", 0.0, "")
  finally:
    for ref in pending:   # interrupted: end the running points (they resume on relaunch)
      ray.cancel(ref, force=True)
    ray.shutdown()


def _last_line(path: str) -> str:
  if not os.path.exists(path):
    return "(no output)"
  with open(path, errors="replace") as f:
    lines = [l.strip() for l in f.read().replace("\r", "\n").splitlines() if l.strip()]
  return lines[-1] if lines else "(no output)"


def write_aggregate(config, config_arg: str, points, workdir: str, results: str = "",
                    launcher: dict | None = None) -> list[dict]:
  """Aggregates the finished points into <workdir>/sweep.* and <results>.* (csv, json, md, png)."""
  from vae_jax.scale import sweeps  # pylint: disable=g-import-not-at-top
  records = sweeps.load_results(workdir, points)
  rows = sweeps.aggregate(records)
  launch = shlex.join(["python", "-m", "experiments.sweep", *sys.argv[1:]])
  prefixes = [os.path.join(workdir, "sweep")] + ([results] if results else [])
  scale = {field: config[field.split(".")[0]][field.split(".")[1]] for field in SCALE_FIELDS}
  finished = sum(r["results"] is not None for r in records)
  together = sorted({r["results"].get("trained_together", 1) for r in records if r["results"]})
  header = {"config": config_arg, "command": launch, "launcher": launcher or {}, "scale": scale,
            "points_finished": finished, "points_total": len(points)}
  scale_text = ", ".join(f"{k}={v}" for k, v in scale.items())
  markdown = (f"Sweep `{config_arg}`: {finished} of {len(points)} points finished.\n\n"
              f"Command: `{launch}`\n\nScale (base config and overrides): {scale_text}.\n\n"
              "Test metrics in nats per image, mean ± std (ddof 1) over seeds; recon = E_q log p(x|z),"
              " kl = KL(q(z|x) ‖ p(z)), nll = −log p̂(x) with eval.is_num_samples importance samples;"
              " train_wall_time_s runs from the first step to the last (validation included, the final test evaluation not) and"
              " depends on the machine's load"
              + (f"; seeds trained together (vmapped, {'/'.join(map(str, together))} per program) share"
                 " theirs" if together != [1] and together else "") + ".\n\n"
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


def accelerator_here() -> bool:
  """Whether JAX's default backend on this machine is not the CPU (asked in a subprocess)."""
  probe = subprocess.run([sys.executable, "-c", "import jax; print(jax.default_backend())"],
                         capture_output=True, text=True, check=False,
                         env=dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false"))
  return probe.returncode == 0 and probe.stdout.strip().splitlines()[-1:] != ["cpu"]


def train_together(config, points, names, workdir: str, selected: list[str]) -> None:
  """--train_points: trains the selected points, equal up to their seed, as one vmapped program."""
  from vae_jax.scale import seeds  # pylint: disable=g-import-not-at-top
  from vae_jax.scale import sweeps  # pylint: disable=g-import-not-at-top
  by_name = dict(zip(names, points))
  unknown = [name for name in selected if name not in by_name]
  if unknown:
    raise ValueError(f"--train_points={unknown[0]}: no such point in the sweep; see --dry_run.")
  chosen = [by_name[name] for name in selected]
  shared = [{k: v for k, v in p.items() if k != sweeps.SEED_FIELD} for p in chosen]
  if any(s != shared[0] for s in shared) or any(sweeps.SEED_FIELD not in p for p in chosen):
    raise ValueError(f"--train_points: {', '.join(selected)} are not one point's seeds; give points"
                     " that differ only in their seed.")
  with cli.one_line_errors():
    results = seeds.train_and_evaluate(
        sweeps.apply(config, shared[0]), [{"seed": p[sweeps.SEED_FIELD]} for p in chosen],
        [os.path.join(workdir, name) for name in selected])
  for name, result in zip(selected, results):
    print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()})


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so tests can import the module)."""
  flags.DEFINE_string("config", None, "Config file with get_config() and get_sweep(), as path[:arg].")
  flags.DEFINE_string("workdir", None, "Folder that receives one sub-workdir per point.")
  flags.DEFINE_enum("executor", "local", ["local", "ray"], "Where the points run.")
  flags.DEFINE_integer("parallel", 1, "local: points trained at the same time (processes).")
  flags.DEFINE_string("ray_address", "auto", "ray: the cluster, auto | local | HOST:PORT.")
  flags.DEFINE_float("cpus_per_point", 1.0, "ray: CPUs that one point (a Ray task) reserves.")
  flags.DEFINE_float("gpus_per_point", 0.0, "ray: GPUs that one point reserves (fractions share one).")
  flags.DEFINE_integer("max_retries", 3, "ray: reruns of a point whose worker or process died.")
  flags.DEFINE_bool(
      "seeds_together", None, "Train each point's seeds as one vmapped program; default: on an accelerator.")
  flags.DEFINE_multi_string(
      "train_points", [], "Train these points (equal up to their seed) together in this process and exit.")
  flags.DEFINE_bool("dry_run", False, "Print the command line of every unfinished point and exit.")
  flags.DEFINE_bool("aggregate_only", False, "Only aggregate the finished points; run nothing.")
  flags.DEFINE_string("results", "", "Also write the aggregate to <results>.{csv,json,md,png}.")
  flags.mark_flags_as_required(["config", "workdir"])


def unfinished(config, points, names, workdir: str) -> list[tuple[dict, str]]:
  """(point, name) of the points without results.json; ValueError if a finished one has other values."""
  from vae_jax.scale import sweeps  # pylint: disable=g-import-not-at-top
  todo = []
  for point, name in zip(points, names):
    if metrics_lib.read_results(os.path.join(workdir, name, "results.json")) is None:
      todo.append((point, name))
      continue
    differ = sweeps.recorded_differences(sweeps.apply(config, point), os.path.join(workdir, name))
    if differ:
      raise ValueError(
          f"finished point {os.path.join(workdir, name)} was trained with other values of"
          f" {', '.join(differ)}; give the same overrides, or another --workdir (delete its"
          " results.json to train it again with these values).")
  return todo


def _check_flags(args) -> None:
  if args.parallel < 1:
    raise ValueError(f"--parallel={args.parallel}: must be ≥ 1.")
  ray_flags = ("ray_address", "cpus_per_point", "gpus_per_point", "max_retries")
  if args.executor == "local" and any(flags.FLAGS[f].present for f in ray_flags):
    given = [f"--{f}" for f in ray_flags if flags.FLAGS[f].present]
    raise ValueError(f"{', '.join(given)} apply to --executor=ray only; add --executor=ray or drop them.")
  if args.executor == "ray" and flags.FLAGS["parallel"].present:
    raise ValueError("--parallel applies to --executor=local; on Ray as many points run as the cluster"
                     " has resources for (--cpus_per_point, --gpus_per_point).")
  if args.cpus_per_point < 0 or args.gpus_per_point < 0 or args.max_retries < 0:
    raise ValueError("--cpus_per_point, --gpus_per_point and --max_retries must be ≥ 0.")
  if args.executor == "ray" and importlib.util.find_spec("ray") is None:
    raise ValueError("--executor=ray needs Ray; install it with pip install -e \".[cluster]\".")


def main(argv):
  args, overrides = flags.FLAGS, argv[1:]
  _check_flags(args)
  config_arg, workdir = args.config, args.workdir
  config, points = load_sweep(config_arg)
  config = apply_overrides(config, overrides, points)
  names = check_points(config, points)
  if args.train_points:
    train_together(config, points, names, workdir, args.train_points)
    return
  todo = unfinished(config, points, names, workdir)
  launcher = {"executor": args.executor, "overrides": overrides}
  launcher.update({"parallel": args.parallel} if args.executor == "local" else {
      "ray_address": args.ray_address, "cpus_per_point": args.cpus_per_point,
      "gpus_per_point": args.gpus_per_point, "max_retries": args.max_retries})
  together = args.seeds_together
  if together is None and not args.aggregate_only and len(todo) > len(plan_jobs(
      config_arg, todo, workdir, overrides, together=True)):   # grouping would change something
    together = args.gpus_per_point > 0 if args.executor == "ray" else accelerator_here()
  launcher["seeds_together"] = together   # None: not decided (nothing to group)
  jobs = plan_jobs(config_arg, todo, workdir, overrides, bool(together))
  if args.dry_run:
    for job in plan_jobs(config_arg, todo, workdir, overrides, bool(together), python="python"):
      print(shlex.join(job.argv))
    return
  if args.aggregate_only:
    print(f"{len(points)} points, {len(points) - len(todo)} finished; aggregating only", flush=True)
    jobs = []
  else:
    where = (f"{args.parallel} at a time" if args.executor == "local"
             else f"on Ray at {args.ray_address}")
    print(f"{len(points)} points, {len(points) - len(todo)} finished, {len(todo)} to run"
          f" ({where}{', seeds together' if together else ''}) in {workdir}", flush=True)
  failed, ended = [], [0]

  def report(job, code, seconds, where):
    ended[0] += 1
    label = job.names[0] + (f" and {len(job.names) - 1} more seed(s) together" if len(job.names) > 1 else "")
    status = "done" if code == 0 else f"FAILED ({code}): {_last_line(job.log)}"
    print(f"[{ended[0]}/{len(jobs)}] {label}: {status} ({seconds:.1f} s{where})", flush=True)
    if code != 0:
      failed.append(job.log)

  for job in jobs:
    for name in job.names[1:]:   # the other seeds of a job say where their output goes
      os.makedirs(os.path.join(workdir, name), exist_ok=True)
      with open(os.path.join(workdir, name, "sweep.log"), "a") as f:
        f.write(f"# trained together with {', '.join(job.names)}; output in {job.log}\n")
  signal.signal(signal.SIGTERM, _stop_running_points)
  signal.signal(signal.SIGINT, _stop_running_points)
  try:
    if jobs:
      if args.executor == "local":
        run_local(jobs, args.parallel, report)
      else:
        run_ray(jobs, report, args.ray_address, args.cpus_per_point, args.gpus_per_point, args.max_retries)
  except KeyboardInterrupt:
    print("error: interrupted; the running points were stopped, rerun the same command to resume"
          " them from their checkpoints.", file=sys.stderr, flush=True)
    sys.exit(1)
  rows = write_aggregate(config, config_arg, points, workdir, args.results, launcher)
  print(f"aggregated {len(rows)} groups into {os.path.join(workdir, 'sweep.md')}"
        + (f" and {args.results}.md" if args.results else ""))
  if failed:
    raise ValueError(f"{len(failed)} point(s) failed, see {', '.join(failed)}; fix and rerun the same command.")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
