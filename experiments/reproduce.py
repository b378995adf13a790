r"""Reproduces Table 1 of the IWAE paper and the VampPrior rows, cell by cell, within a budget.

  python -m experiments.reproduce --run --cells=iwae_1layer_k5 --epochs=E [--session_s=S]
  python -m experiments.reproduce --collect
  python -m experiments.reproduce --run --collect --cells=vae_1layer_k1 --epochs=1 \
      --workdir_root=/tmp/smoke --results_dir=/tmp/smoke --zoo_dir=/tmp/smoke/zoo -- \
      --config.data.train_subset=2000 --config.eval.num_examples=200 --config.eval.is_num_samples=50

The cells (`CELLS`; the k=1 cells of VAE and IWAE are the same model):

  <objective>_<L>layer_k<k>   iwae.py with layers=<L>, objective=<vae|iwae>, k=<k>
                              (L = 1, 2; k = 1, 5, 50; vae_<L>layer_k1 for both k=1 cells)
  vampprior_<L>layer          vampprior.py with layers=<L>

`--run` trains each cell of --cells in its own `experiments.train` process in
<workdir_root>/<cell>[_<tag>]_e<E> under the paper's protocol (`PROTOCOL`: all
60000 training images, IS k=5000 on all 10000 test images), with E epochs;
arguments after `--` (`--config.<field>=<value>`, the levers) follow it. The
cell's training wall time, summed over sessions, is held to --budget_s (default:
the issue's budget of the cell, `Cell.budget_s`; 0: none): the process is
stopped when it is used up, and a later --run refuses to go on. --session_s
stops this invocation's processes after that long; rerunning the same command
resumes each from its newest checkpoint (orbax). Every session (start, wall
time, start step, exit, why it stopped, load average) is appended to
<workdir>/launch.json.

A finished cell is published: its results.json, config.json, metrics.jsonl,
launch.json (with the exact command) and curve.json (test NLL of every kept
checkpoint on the first --curve_images test images against the cell's
cumulative training wall time) go to <results_dir>/iwae_runs/<cell>[_<tag>]/,
its parameters to the model zoo <zoo_dir>/<cell>[_<tag>]/ (`vae_jax.run.zoo`);
an existing record or entry is replaced only with --replace.

`--collect` reads every record under <results_dir>/iwae_runs/ and writes
<results_dir>/iwae_table.{md,json} and iwae_curves.png: our test NLL ± its
standard error beside the paper's, ours − paper, epochs, training time (hours
on the CPU, or GPU minutes), seed, whether the run is comparable (and if not,
why), the exact command, and every pair of cells whose order inverts the
paper's. Every number of ours is read from the records; only the paper columns
(`IWAE_PAPER`, `VAMPPRIOR_PAPER`) are typed in.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time

from absl import flags

from experiments import cli
from vae_jax.run import metrics as metrics_lib

CONFIGS = "experiments/configs"
KS = (1, 5, 50)
# Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders", ICLR,
# Table 1, MNIST (dynamically binarised; IS k=5000 on the test set): test NLL in
# nats for k = 1, 5, 50, per (training objective, stochastic layers).
IWAE_PAPER = {("vae", 1): (86.76, 86.47, 86.35), ("iwae", 1): (86.76, 85.54, 84.78),
              ("vae", 2): (85.33, 85.01, 84.78), ("iwae", 2): (85.33, 83.89, 82.90)}
# Tomczak & Welling (2018), "VAE with a VampPrior", AISTATS, Table 2, dynamic
# MNIST, K = 500 pseudo-inputs: VAE (1 layer) and HVAE (2 layers) + VampPrior.
# (2026-12-01: the stored copies of both papers searchable from here exposed no
# tables; these values are issue 16's, to be confirmed against the PDFs.)
VAMPPRIOR_PAPER = {1: 85.57, 2: 83.19}
PAPERS = ("Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders, ICLR, Table 1 (MNIST);"
          " Tomczak & Welling (2018), VAE with a VampPrior, AISTATS, Table 2 (dynamic MNIST, K = 500)")
# The protocol of a comparable cell (each run's config.json is checked against it).
PROTOCOL = ("--config.data.train_on_validation=True", "--config.data.train_subset=0",
            "--config.eval.num_examples=0", "--config.eval.is_num_samples=5000")
TEST_BINARIZATION = "splits.fixed_binarization (per image and pixel, since 2026-12-01)"


@dataclasses.dataclass(frozen=True)
class Cell:
  """One cell of the table: a model trained by one config."""
  name: str
  label: str
  config: str        # the --config argument of experiments.train
  paper: float       # the paper's test NLL (nats)
  budget_s: float    # the training budget on the 2-core CPU


def _layers(layers: int) -> str:
  return f"{layers} stochastic layer{'s' if layers > 1 else ''}"


def cell_name(objective: str, layers: int, k: int) -> str:
  return f"vae_{layers}layer_k1" if k == 1 else f"{objective}_{layers}layer_k{k}"


def _cells() -> dict[str, Cell]:
  cells = {}
  for (objective, layers), row in IWAE_PAPER.items():
    for k, paper in zip(KS, row):
      label = (f"VAE = IWAE, {_layers(layers)}, k=1" if k == 1
               else f"{objective.upper()}, {_layers(layers)}, k={k}")
      cells.setdefault(cell_name(objective, layers, k), Cell(
          cell_name(objective, layers, k), label,
          f"{CONFIGS}/iwae.py:layers={layers},objective={objective},k={k}", paper,
          7200.0 if k == 5 else 3600.0))
  for layers, paper in VAMPPRIOR_PAPER.items():
    cells[f"vampprior_{layers}layer"] = Cell(
        f"vampprior_{layers}layer", f"{'VAE' if layers == 1 else 'HVAE'} + VampPrior, {_layers(layers)}",
        f"{CONFIGS}/vampprior.py:layers={layers}", paper, 7200.0)
  return cells


CELLS = _cells()


def identify(command: str | None) -> str | None:
  """The cell a training command trains, read from its --config argument (None: no cell)."""
  match = re.search(r"--config=\S*?(iwae|vampprior)\.py:(\S*)", command or "")
  if not match:
    return None
  args = dict(item.partition("=")[::2] for item in match.group(2).split(",") if item)
  layers = int(args.get("layers", 1))
  if match.group(1) == "vampprior":
    name = f"vampprior_{layers}layer"
  elif args.get("static", "0") != "0":
    return None
  else:
    k = int(args.get("k", 1))
    name = cell_name(args.get("objective", "iwae" if k > 1 else "vae"), layers, k)
  return name if name in CELLS else None


# ---------------------------------------------------------------- training


def parse_config(args):
  """The config `experiments.train` builds from `--config=...` and `--config.<field>=...` args."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  values, argv = flags.FlagValues(), ["reproduce", *args]
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=argv)
  try:
    values(argv)
    return values.config
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
    text = str(e).strip().splitlines()
    raise ValueError(f"{' '.join(args[:1])}: {text[-1] if text else type(e).__name__}") from e


def _last_wins(args: list[str]) -> list[str]:
  """Each --flag once, with its last value (experiments.train refuses a flag given twice)."""
  last = {arg.split("=", 1)[0]: i for i, arg in enumerate(args)}
  return [arg for i, arg in enumerate(args) if last[arg.split("=", 1)[0]] == i]


def train_command(cell: Cell, epochs: int, workdir: str, extra=(),
                  curve_points: int = 12) -> tuple[list[str], int]:
  """The experiments.train command of `cell` and the step it ends at.

  The command sets the protocol, then the levers `extra`, then an evaluation
  and a kept checkpoint every epochs // curve_points epochs (the points of the
  curve) and a train record every epoch.
  """
  from vae_jax.datasets import data as data_lib  # pylint: disable=g-import-not-at-top
  from vae_jax.datasets import splits  # pylint: disable=g-import-not-at-top
  args = _last_wins([f"--config={cell.config}", *PROTOCOL, f"--config.training.num_epochs={epochs}", *extra])
  config = parse_config(args)
  steps_per_epoch = data_lib.num_batches(len(splits.load_data(config, "train").images),
                                         config.training.batch_size)
  every = max(1, epochs // curve_points)
  args = _last_wins(args + [f"--config.training.eval_every_epochs={every}",
                            f"--config.training.keep_checkpoints_every_steps={every * steps_per_epoch}",
                            f"--config.training.log_every_steps={steps_per_epoch}",
                            "--config.training.progress_bar=False", "--config.training.tensorboard=False"])
  return ["python", "-m", "experiments.train", *args, f"--workdir={workdir}"], epochs * steps_per_epoch


def _read(path: str):
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _write(path: str, record) -> None:
  with open(path + ".tmp", "w") as f:
    json.dump(record, f, indent=2)
  os.replace(path + ".tmp", path)


def used_s(launch: dict) -> float:
  """Training wall time of a cell's sessions so far (each whole process, stopped or not)."""
  return sum(s.get("wall_s") or 0.0 for s in launch.get("sessions", []))


def training_time_s(launch: dict, results: dict) -> float:
  """The training wall time of a finished cell: every earlier session whole, the last one's training loop."""
  sessions = launch.get("sessions", [])
  return sum(s.get("wall_s") or 0.0 for s in sessions[:-1]) + results["train_wall_time_s"]


def device_name(env: dict) -> str:
  """The first JAX device the runs will see, asked in a child process (it frees the device)."""
  probe = "import jax; d = jax.devices()[0]; print(f'{d.platform}: {d.device_kind} x{jax.device_count()}')"
  env = dict(env, XLA_PYTHON_CLIENT_PREALLOCATE="false")
  out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=False)
  return out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else "unknown"


def _newest_step(workdir: str) -> int:
  folder = os.path.join(workdir, "checkpoints")
  steps = [int(d) for d in os.listdir(folder) if d.isdigit()] if os.path.isdir(folder) else []
  return max(steps, default=0)


@dataclasses.dataclass
class _Session:
  """A cell's training process started by this invocation."""
  cell: Cell
  workdir: str
  process: subprocess.Popen
  launch: dict
  started: float
  budget_s: float
  final_step: int


def _start(cell, command, workdir, env, device, budget_s, final_step, parallel) -> _Session:
  launch = _read(os.path.join(workdir, "launch.json")) or {}
  launch.update(cell=cell.name, command=shlex.join(command), workdir=os.path.abspath(workdir),
                host=platform.node(), device=device, cores=os.cpu_count(), parallel=parallel,
                budget_s=budget_s or None, test_binarization=TEST_BINARIZATION)
  launch.setdefault("sessions", []).append(dict(
      started=datetime.datetime.now().isoformat(timespec="seconds"), start_time=time.time(),
      start_step=_newest_step(workdir), load_average_start=list(os.getloadavg())))
  _write(os.path.join(workdir, "launch.json"), launch)
  with open(os.path.join(workdir, "train.log"), "a") as log:
    log.write(f"$ {launch['command']}\n")
    log.flush()
    process = subprocess.Popen([sys.executable, *command[1:]], stdout=log, stderr=subprocess.STDOUT, env=env)
  return _Session(cell, workdir, process, launch, time.time(), budget_s, final_step)


def _end(session: _Session, stopped: str | None) -> None:
  if stopped:
    session.process.terminate()
    try:
      session.process.wait(60)
    except subprocess.TimeoutExpired:
      session.process.kill()
      session.process.wait()
  session.launch["sessions"][-1].update(
      wall_s=time.time() - session.started, returncode=session.process.returncode, stopped=stopped,
      end_step=_newest_step(session.workdir), load_average_end=list(os.getloadavg()))
  _write(os.path.join(session.workdir, "launch.json"), session.launch)


def run_cells(cells: list[Cell], epochs: int, root: str, *, tag: str = "", extra=(), parallel: int = 1,
              budget_s: float = -1, session_s: float = 0, curve_points: int = 12) -> tuple[list, list]:
  """Trains the unfinished `cells`, `parallel` processes at a time.

  Returns:
    (finished: [(cell, workdir)], problems: one line per cell that failed,
    ran out of its budget or was stopped at --session_s).
  """
  env = dict(os.environ)
  if parallel > 1:   # JAX preallocates 75% of a GPU per process otherwise
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / parallel:.2f}")
  todo, finished, problems = [], [], []
  for cell in cells:
    workdir = os.path.join(root, f"{cell.name}{'_' + tag if tag else ''}_e{epochs}")
    budget = cell.budget_s if budget_s < 0 else budget_s
    launch = _read(os.path.join(workdir, "launch.json")) or {}
    if metrics_lib.read_results(os.path.join(workdir, "results.json")) is not None:
      finished.append((cell, workdir))
    elif budget and used_s(launch) >= budget:
      problems.append(f"{cell.name}: its budget of {budget:.0f} s is used up ({used_s(launch):.0f} s,"
                      f" step {_newest_step(workdir)}) in {workdir}; give fewer --epochs, or"
                      " --budget_s=0 to finish it beyond the budget.")
    else:
      todo.append((cell, workdir, budget, *train_command(cell, epochs, workdir, extra, curve_points)))
  print(f"{len(cells)} cells: {len(finished)} finished, {len(todo)} to train ({parallel} at a time)"
        f" under {root}", flush=True)
  device = device_name(env) if todo else ""
  running, start = [], time.time()
  while todo or running:
    while todo and len(running) < parallel:
      cell, workdir, budget, command, final_step = todo.pop(0)
      os.makedirs(workdir, exist_ok=True)
      print(f"start {cell.name}: {shlex.join(command)}", flush=True)
      running.append(_start(cell, command, workdir, env, device, budget, final_step, parallel))
    time.sleep(1)
    for session in list(running):
      now = time.time()
      if session.process.poll() is None:
        training = not os.path.isdir(os.path.join(session.workdir, "checkpoints", str(session.final_step)))
        over_budget = session.budget_s and used_s(session.launch) + now - session.started >= session.budget_s
        if training and over_budget:
          _end(session, "budget")
        elif session_s and now - start >= session_s:
          _end(session, "session")
        else:
          continue
      else:
        _end(session, None)
      running.remove(session)
      last = session.launch["sessions"][-1]
      done = metrics_lib.read_results(os.path.join(session.workdir, "results.json")) is not None
      print(f"{session.cell.name}: {'done' if done else last['stopped'] or 'FAILED'} after"
            f" {last['wall_s']:.0f} s, step {last['end_step']} (log: {session.workdir}/train.log)", flush=True)
      if done:
        finished.append((session.cell, session.workdir))
      elif last["stopped"] == "session":
        problems.append(f"{session.cell.name}: stopped at --session_s at step {last['end_step']};"
                        " rerun the same command to resume it.")
      elif last["stopped"] == "budget":
        problems.append(f"{session.cell.name}: its budget of {session.budget_s:.0f} s ran out at step"
                        f" {last['end_step']} of {session.final_step}: {epochs} epochs do not fit; give"
                        " fewer --epochs, or --budget_s=0 to finish it beyond the budget.")
      else:
        problems.append(f"{session.cell.name}: training failed (exit {last['returncode']}); see"
                        f" {session.workdir}/train.log.")
  return finished, problems


# ---------------------------------------------------------------- curves (shared with benchmarks.quality_per_hour)


def checkpoint_curve(workdir: str, num_images: int) -> list[dict]:
  """IS-NLL (the run's eval.is_num_samples) of every kept checkpoint on the first `num_images` test images.

  Each point: step, epoch, wall_time_s (the training loop's when the
  checkpoint was written, from the validation record of that step: of its own
  session), nll, nll_stderr, neg_elbo and num_images.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from vae_jax.datasets import splits  # pylint: disable=g-import-not-at-top
  from vae_jax.inference import evaluation  # pylint: disable=g-import-not-at-top
  from vae_jax.models import build  # pylint: disable=g-import-not-at-top
  from vae_jax.run import checkpoints as checkpoints_lib  # pylint: disable=g-import-not-at-top
  from vae_jax.run import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  config = workdir_lib.load_config(workdir)
  model = build.build_model(config)
  target = workdir_lib.state_template(config, model)
  config.eval.num_examples = num_images
  test = splits.load_data(config, "test").images
  wall = {record["step"]: record for record in metrics_lib.read_metrics(os.path.join(workdir, "metrics.jsonl"))
          if record.get("split") == "validation"}
  store = checkpoints_lib.CheckpointStore(workdir, config.training.keep_checkpoints,
                                          config.training.keep_checkpoints_every_steps or None)
  points = []
  try:
    for step in store.steps():
      state, _ = store.restore(step, target)
      scores = evaluation.evaluate(model, state.params, test, jax.random.PRNGKey(7),
                                   num_samples=config.eval.is_num_samples)
      record = wall.get(step, {})
      if not math.isfinite(scores["nll"]):
        print(f"WARNING: the NLL of checkpoint {step} of {workdir} is not finite; left out of the curve.")
        continue
      points.append(dict(step=step, epoch=record.get("epoch"), wall_time_s=record.get("wall_time"),
                         nll=scores["nll"], nll_stderr=scores["nll_stderr"],
                         neg_elbo=scores["neg_elbo"], num_images=len(test)))
      print(json.dumps(points[-1]), flush=True)
  finally:
    store.close()
  return points


def plot_nll_curves(panels: dict, path: str, budget_min: float | None = None) -> None:
  """Test NLL against training wall time (minutes), one line per curve, one panel per entry of `panels`.

  Args:
    panels: {title: [curve]}, a curve {"label", "points": [(minutes, nll,
      stderr)], "final": (minutes, nll, stderr) or None (drawn as a star),
      "paper": the paper's NLL or None (a dashed line of the curve's colour)}.
    path: the PNG to write.
    budget_min: a dotted vertical line at this many minutes.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
  for ax, (title, curves) in zip(axes[0], panels.items()):
    colours = plt.cm.tab20.colors if len(curves) > 10 else plt.cm.tab10.colors
    for colour, curve in zip(colours, curves):
      points = curve["points"]
      if points:
        ax.errorbar(*zip(*[(m, n) for m, n, _ in points]), yerr=[s for _, _, s in points], marker="o",
                    markersize=3, color=colour, label=curve["label"])
      if curve.get("final"):
        minutes, nll, stderr = curve["final"]
        ax.errorbar([minutes], [nll], yerr=[stderr], marker="*", markersize=10, color=colour,
                    label=None if points else curve["label"])
      if curve.get("paper") is not None:
        ax.axhline(curve["paper"], color=colour, linestyle="--", linewidth=0.8,
                   label=f"paper {curve['paper']}" if len(curves) == 1 else None)
    if budget_min:
      ax.axvline(budget_min, color="gray", linestyle=":")
    ax.set(xlabel="training wall time (min)", ylabel="test NLL (nats)", title=title)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


# ---------------------------------------------------------------- records


def publish(name: str, workdir: str, results_dir: str, zoo_dir: str, curve_images: int = 1000,
            replace: bool = False) -> str:
  """Keeps a finished cell: its record in <results_dir>/iwae_runs/<name>/ and its parameters in the zoo.

  Raises:
    ValueError: a record or zoo entry of that name holds another run and not `replace`.
  """
  from vae_jax.run import zoo  # pylint: disable=g-import-not-at-top
  record = os.path.join(results_dir, "iwae_runs", name)
  launch = _read(os.path.join(workdir, "launch.json")) or {}
  existing = _read(os.path.join(record, "launch.json"))
  same = existing is not None and (existing.get("workdir"), existing.get("sessions")) == (
      launch.get("workdir"), launch.get("sessions"))
  if existing is not None and not same and not replace:
    raise ValueError(f"{record} holds another run ({existing.get('command')}); give --replace to"
                     " replace it and its zoo entry.")
  if not same:
    results = zoo.finished_results(workdir)
    sessions = launch.get("sessions", [])
    points = checkpoint_curve(workdir, curve_images)
    for point in points:
      before = [s for s in sessions if s.get("start_step", 0) < point["step"]][:-1]
      point["training_time_s"] = (None if point["wall_time_s"] is None
                                  else sum(s.get("wall_s") or 0.0 for s in before) + point["wall_time_s"])
    tmp = record + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for file in ("results.json", "config.json", "metrics.jsonl"):
      shutil.copy(os.path.join(workdir, file), tmp)
    _write(os.path.join(tmp, "launch.json"), dict(launch, training_time_s=training_time_s(launch, results)))
    _write(os.path.join(tmp, "curve.json"), {"num_images": curve_images, "points": points})
    shutil.rmtree(record, ignore_errors=True)
    os.replace(tmp, record)
  entry = os.path.join(zoo.zoo_dir(zoo_dir), name)
  if os.path.exists(entry) and not same and replace:
    shutil.rmtree(entry)
  if not os.path.exists(entry):
    zoo.export(workdir, name, zoo=zoo_dir)
  print(f"{name}: record {record}, zoo entry {entry}", flush=True)
  return record


def protocol_problems(config, results: dict) -> list[str]:
  """How a run departs from the table's protocol (empty: comparable)."""
  problems = []
  if config.data.name != "dynamic_binarized_mnist":
    problems.append(f"data {config.data.name}")
  if config.data.train_subset or not config.data.train_on_validation:
    images = 60000 if config.data.train_on_validation else 50000
    problems.append(f"trained on {min(config.data.train_subset or images, images)} images, not 60000")
  if config.data.exclude_label >= 0:
    problems.append(f"without digit {config.data.exclude_label}")
  if results.get("num_test_examples") != 10000:
    problems.append(f"{results.get('num_test_examples')} test images")
  if config.eval.is_num_samples != 5000:
    problems.append(f"IS k={config.eval.is_num_samples}")
  return problems


def table_row(folder: str) -> dict:
  """The table's record of one run, every number read from its files."""
  from vae_jax.run import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  name = os.path.basename(os.path.normpath(folder))
  results, config = metrics_lib.read_results(os.path.join(folder, "results.json")), workdir_lib.load_config(folder)
  launch = _read(os.path.join(folder, "launch.json")) or _read(os.path.join(folder, "run.json")) or {}
  cell = CELLS.get(identify(launch.get("command")))
  time_s = training_time_s(launch, results) if launch.get("sessions") else results["train_wall_time_s"]
  device = launch.get("device") or "unrecorded device"
  nll, paper = results.get("nll"), cell.paper if cell else None
  validation = [(r["epoch"], r["neg_elbo"]) for r in metrics_lib.read_metrics(os.path.join(folder, "metrics.jsonl"))
                if r["split"] == "validation" and isinstance(r.get("neg_elbo"), float)]
  problems = protocol_problems(config, results)
  curve = _read(os.path.join(folder, "curve.json")) or {"points": []}
  return {
      "record": name, "cell": cell.name if cell else None, "in_grid": cell is not None and name == cell.name,
      "label": cell.label if cell else name, "test_nll": nll, "test_nll_stderr": results.get("nll_stderr"),
      "test_neg_elbo": results["neg_elbo"], "test_neg_elbo_stderr": results["neg_elbo_stderr"],
      "paper_nll": paper, "ours_minus_paper": None if paper is None or nll is None else nll - paper,
      "comparable": not problems, "protocol_problems": problems,
      "test_binarization": (launch.get("test_binarization", "one bernoulli draw over the cut split (before 2026-12-01)")
                            if config.data.name == "dynamic_binarized_mnist" else "the dataset's own binary images"),
      "epochs": results["epochs"], "steps": results["step"], "batch_size": config.training.batch_size,
      "training_time_s": time_s, "sessions": len(launch.get("sessions", [])) or 1,
      "gpu": not device.lower().startswith("cpu"), "device": device, "cores": launch.get("cores"),
      "budget_s": launch.get("budget_s"), "seed": config.seed, "command": launch.get("command"),
      "validation_neg_elbo_last": validation[-2:], "curve": curve["points"],
  }


def collect(results_dir: str) -> list[dict]:
  """One row per record under <results_dir>/iwae_runs/: the cells in table order, then the other runs."""
  folder = os.path.join(results_dir, "iwae_runs")
  names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
  rows = [table_row(os.path.join(folder, n)) for n in names
          if all(os.path.exists(os.path.join(folder, n, f)) for f in ("results.json", "config.json"))]
  order = {name: i for i, name in enumerate(CELLS)}
  return sorted(rows, key=lambda r: (not r["in_grid"], order.get(r["cell"], len(order)), r["record"]))


def _neighbours() -> list[tuple[str, str]]:
  """Pairs (a, b) of cells the paper orders a < b that the table lets one compare directly."""
  pairs = []
  for (objective, layers) in IWAE_PAPER:
    pairs += [(cell_name(objective, layers, k2), cell_name(objective, layers, k1)) for k1, k2 in zip(KS, KS[1:])]
  for layers in (1, 2):
    pairs += [(cell_name("iwae", layers, k), cell_name("vae", layers, k)) for k in KS[1:]]
    pairs += [(f"vampprior_{layers}layer", cell_name("vae", layers, 1))]
  pairs += [(cell_name(o, 2, k), cell_name(o, 1, k)) for o in ("vae", "iwae") for k in KS]
  pairs += [("vampprior_2layer", "vampprior_1layer")]
  return [(a, b) for a, b in dict.fromkeys(pairs) if CELLS[a].paper < CELLS[b].paper]


def inversions(rows: list[dict]) -> list[str]:
  """One line per pair of cells whose measured order inverts the paper's, with the facts that bear on why."""
  grid = {r["cell"]: r for r in rows if r["in_grid"] and r["test_nll"] is not None}
  lines = []
  for a, b in _neighbours():
    if a not in grid or b not in grid or grid[a]["test_nll"] < grid[b]["test_nll"]:
      continue
    ra, rb = grid[a], grid[b]
    gap, se = ra["test_nll"] - rb["test_nll"], math.hypot(ra["test_nll_stderr"], rb["test_nll_stderr"])
    lines.append(
        f"* **{a} ≥ {b}**: ours {ra['test_nll']:.2f} ≥ {rb['test_nll']:.2f} (gap {gap:.2f} ± {se:.2f},"
        f" unpaired s.e.: {'within' if gap <= 2 * se else 'beyond'} 2 s.e.); the paper has"
        f" {CELLS[a].paper:.2f} < {CELLS[b].paper:.2f}. {a}: {_effort(ra)}; {b}: {_effort(rb)}.")
  return lines


def _effort(row: dict) -> str:
  last = row["validation_neg_elbo_last"]
  trend = ("" if len(last) < 2 else f", validation −ELBO {'still falling' if last[1][1] < last[0][1] else 'flat or rising'}"
           f" at the end ({last[0][1]:.2f} → {last[1][1]:.2f})")
  return f"{row['epochs']} epochs in {_hours(row)}{trend}"


def _hours(row: dict) -> str:
  if row["gpu"]:
    return f"{row['training_time_s'] / 60:.1f} GPU-min"
  return f"{row['training_time_s'] / 3600:.2f} h on {row['cores'] or 'unrecorded'} CPU cores"


def _ours(row: dict) -> str:
  return "—" if row["test_nll"] is None else f"{row['test_nll']:.2f} ± {row['test_nll_stderr']:.2f}"


def render_markdown(rows: list[dict], command: str) -> str:
  """The table as Markdown, with how it was made."""
  grid = {r["cell"]: r for r in rows if r["in_grid"]}

  def cell(name):
    row = grid.get(name)
    ours = "—" if row is None else _ours(row) + ("" if row["comparable"] else " *")
    return f"{ours} / {CELLS[name].paper:.2f}"

  lines = [
      "# IWAE Table 1 and the VampPrior rows: test NLL in nats, dynamically binarised MNIST\n",
      f"Generated by `{command}` from the records in `iwae_runs/` (each run's results.json, config.json and"
      f" launch.json or run.json); nothing is typed in but the paper columns: {PAPERS}.\n",
      "Protocol of a comparable run: `dynamic_binarized_mnist`, trained on all 60000 MNIST training images"
      " (`data.train_on_validation`), test NLL = −log p̂(x) with p̂ importance-sampled with k = 5000 samples"
      " of q(z|x), mean ± standard error over all 10000 test images (binarised once, per image: README"
      " \"Data\"). The papers trained for 3280 epochs (IWAE) or with early stopping (VampPrior); our cells"
      " have the budgets of issue 16 (k=1 and k=50: 1 CPU-hour, k=5 and VampPrior: 2 CPU-hours on 2 cores).\n",
      "## Table 1 (ours ± s.e. / paper; * not comparable, see below)\n",
      "| | k=1 | k=5 | k=50 |", "| --- | --- | --- | --- |"]
  for objective, layers in IWAE_PAPER:
    lines.append(f"| {objective.upper()}, {_layers(layers)} | "
                 + " | ".join(cell(cell_name(objective, layers, k)) for k in KS) + " |")
  for layers in VAMPPRIOR_PAPER:
    lines.append(f"| {CELLS[f'vampprior_{layers}layer'].label} | {cell(f'vampprior_{layers}layer')} | | |")
  lines += ["\n## Every run\n",
            "| run | cell | ours: test NLL | paper | ours − paper | test −ELBO | epochs | training time"
            " | sessions | seed | comparable |", "| --- " * 11 + "|"]
  for r in rows:
    diff = "—" if r["ours_minus_paper"] is None else f"{r['ours_minus_paper']:+.2f}"
    comparable = "yes" if r["comparable"] else "no: " + ", ".join(r["protocol_problems"])
    paper = "—" if r["paper_nll"] is None else f"{r['paper_nll']:.2f}"
    lines.append(f"| {r['record']} | {r['cell'] or '—'} | {_ours(r)} | {paper} | {diff} |"
                 f" {r['test_neg_elbo']:.2f} ± {r['test_neg_elbo_stderr']:.2f} | {r['epochs']} | {_hours(r)} |"
                 f" {r['sessions']} | {r['seed']} | {comparable} |")
  if not rows:
    lines.append("| (no finished runs) |" + " |" * 10)
  found = inversions(rows)
  lines += ["\n## Where ours inverts the paper's order\n",
            *(found or ["None among the cells measured so far."])]
  lines += ["\n## How each run was made\n"]
  for r in rows:
    lines.append(f"* **{r['record']}**: `{r['command'] or 'not recorded'}` on {r['device']}"
                 f" ({r['steps']} steps of batch {r['batch_size']}, {_effort(r)}; test images:"
                 f" {r['test_binarization']})")
  if rows:
    lines.append("\n![test NLL against training wall time](iwae_curves.png)\n\nThe curves: test NLL (IS, the"
                 " run's k) of each kept checkpoint on the first test images (curve.json says how many) against"
                 " the cell's training wall time summed over its sessions; stars: the final NLL on all test"
                 " images; dashed: the paper.")
  return "\n".join(lines) + "\n"


def curves_figure(rows: list[dict], path: str) -> None:
  """iwae_curves.png: test NLL of each run's kept checkpoints against its cumulative training time."""
  panels = {}
  for r in rows:
    points = [(p["training_time_s"] / 60, p["nll"], p["nll_stderr"]) for p in r["curve"]
              if p.get("training_time_s") is not None]
    final = (r["training_time_s"] / 60, r["test_nll"], r["test_nll_stderr"]) if r["test_nll"] else None
    title = "GPU" if r["gpu"] else "CPU"
    panels.setdefault(title, []).append(dict(label=r["record"], points=points, final=final, paper=r["paper_nll"]))
  if panels:
    plot_nll_curves(panels, path)


def write_table(rows: list[dict], results_dir: str, command: str) -> tuple[str, str]:
  """Writes <results_dir>/iwae_table.json, .md and iwae_curves.png; returns the paths of the first two."""
  os.makedirs(results_dir, exist_ok=True)
  json_path, md_path = (os.path.join(results_dir, f"iwae_table.{ext}") for ext in ("json", "md"))
  _write(json_path, {"command": command, "papers": PAPERS, "rows": rows})
  curves_figure(rows, os.path.join(results_dir, "iwae_curves.png"))
  with open(md_path, "w") as f:
    f.write(render_markdown(rows, command))
  return json_path, md_path


# ---------------------------------------------------------------- command line


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so tests can import the module)."""
  flags.DEFINE_bool("run", False, "Train the cells of --cells that have no results.json, then publish them.")
  flags.DEFINE_bool("collect", False, "Build the table and the figure from the records.")
  flags.DEFINE_list("cells", [], f"Cells to train: {', '.join(CELLS)}.")
  flags.DEFINE_integer("epochs", None, "Training epochs of every cell (with --run).")
  flags.DEFINE_string("tag", "", "Suffix of the workdirs and records, e.g. gpu for the full protocol on a GPU.")
  flags.DEFINE_float("budget_s", -1, "Training wall time of a cell over all sessions (-1: the cell's, 0: none).")
  flags.DEFINE_float("session_s", 0, "Stop this invocation's trainings after this many seconds (0: never).")
  flags.DEFINE_integer("parallel", 1, "Cells trained at the same time (processes).")
  flags.DEFINE_integer("curve_points", 12, "Kept checkpoints (points of the curve) per cell.")
  flags.DEFINE_integer("curve_images", 1000, "Test images of each point of the curve.")
  flags.DEFINE_string("workdir_root", "workdirs/iwae", "Folder of the cells' workdirs (not kept in git).")
  flags.DEFINE_string("results_dir", "experiments/results", "Where iwae_runs/, iwae_table.* and iwae_curves.png go.")
  flags.DEFINE_string("zoo_dir", None, "The model zoo for finished cells (default $VAE_JAX_ZOO_DIR or zoo/).")
  flags.DEFINE_bool("replace", False, "Replace an existing record and zoo entry of a cell by a new run.")


def check_arguments(args, extra) -> list[Cell]:
  """The cells of --cells; ValueError naming the first bad argument."""
  if not (args.run or args.collect):
    raise ValueError("nothing to do; give --run (train --cells) and/or --collect (build the table).")
  unknown = [c for c in args.cells if c not in CELLS]
  if unknown:
    raise ValueError(f"--cells: unknown cell(s) {', '.join(unknown)}; choose among {', '.join(CELLS)}.")
  bad = [a for a in extra if not a.startswith("--config.")]
  if bad:
    raise ValueError(f"arguments after -- must be --config.<field>=<value> overrides, got {' '.join(bad)}.")
  if args.run and not args.cells:
    raise ValueError("--run needs --cells=<cell>,... (see --helpfull for the cells).")
  if args.run and (not args.epochs or args.epochs < 1):
    raise ValueError("--run needs --epochs=E (≥ 1): the training epochs of every cell.")
  if args.parallel < 1 or args.curve_points < 1 or args.curve_images < 1:
    raise ValueError("--parallel, --curve_points and --curve_images must be ≥ 1.")
  if args.tag and not re.fullmatch(r"[a-z0-9]+", args.tag):
    raise ValueError(f"--tag={args.tag!r}: use lower-case letters and digits, e.g. gpu.")
  return [CELLS[c] for c in args.cells]


def main(argv):
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")   # leave the device to the trainings
  args, extra = flags.FLAGS, argv[1:]
  cells = check_arguments(args, extra)
  problems = []
  if args.run:
    finished, problems = run_cells(
        cells, args.epochs, args.workdir_root, tag=args.tag, extra=extra, parallel=args.parallel,
        budget_s=args.budget_s, session_s=args.session_s, curve_points=args.curve_points)
    for cell, workdir in finished:
      publish(cell.name + (f"_{args.tag}" if args.tag else ""), workdir, args.results_dir, args.zoo_dir,
              args.curve_images, args.replace)
  if args.collect:
    command = shlex.join(["python", "-m", "experiments.reproduce", "--collect"]
                         + ([f"--results_dir={args.results_dir}"] if args.results_dir != "experiments/results" else []))
    rows = collect(args.results_dir)
    _, md_path = write_table(rows, args.results_dir, command)
    print(f"{len(rows)} runs -> {md_path}")
  if problems:
    print("\n".join(problems), flush=True)
    raise ValueError(f"{len(problems)} cell(s) did not finish: {problems[0]}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
