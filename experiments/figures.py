r"""Regenerates the figures: the thesis's network diagrams and those of trained runs.

  python -m experiments.figures --all --out=experiments/results/figures
  python -m experiments.figures --workdir=workdirs/quick --out=figures
  python -m experiments.figures --pretrained=iwae_1layer_k5 --out=figures   # a model of the zoo

Writes, each as PNG and PDF under a stable name:

  <out>/diagrams/figure_1_1_network, figure_2_1_autoencoder, figure_2_2_encoder,
      figure_2_3_decoder          drawn from θ built with vae_jax (widths read
                                  from the parameter shapes)
  <out>/<run>/network, reconstructions, samples, interpolations, curves and,
      for latent_dim = 2, latent_scatter and latent_manifold
                                  from the newest checkpoint of each workdir
                                  (`vae_jax.plots.figures.write_run_figures`)

and `<out>/manifest.{json,md}` listing every figure with the command that drew
it, and for run figures the training command and the run's config.

`--all` adds the recorded runs of `RUNS` (workdirs under --runs_root), first
training those that have no results.json with the command recorded there (a
run that was interrupted resumes from its checkpoint), and the training curves
of the finished runs kept in `RECORDED_RUNS` (the IWAE table's runs).
"""

import glob
import json
import os
import shlex
import subprocess
import sys
import time

from absl import flags

from experiments import cli

# Finished runs kept in the repository (metrics, config, results; no checkpoints): curves only.
RECORDED_RUNS = "experiments/results/iwae_runs"
# The recorded runs behind the VAE figures: name -> arguments of experiments.train.
RUNS = {
    "vae_latent2": ("--config=experiments/configs/default.py:quick", "--config.model.latent_dim=2"),
    "vae_latent32": ("--config=experiments/configs/default.py:quick",),
    "ae_latent2": ("--config=experiments/configs/autoencoder.py:quick", "--config.model.latent_dim=2"),
}


def train_command(name: str, runs_root: str) -> list[str]:
  """The experiments.train command of a recorded run."""
  return ["python", "-m", "experiments.train", *RUNS[name],
          f"--workdir={os.path.join(runs_root, name)}"]


def train_missing(workdir: str, command: list[str]) -> None:
  """Runs `command` (output to <workdir>/train.log) unless workdir holds results.json."""
  from vae_jax.run import metrics  # pylint: disable=g-import-not-at-top
  if metrics.read_results(os.path.join(workdir, "results.json")) is not None:
    return
  os.makedirs(workdir, exist_ok=True)
  print(f"training {workdir}: {shlex.join(command)}", flush=True)
  start = time.time()
  with open(os.path.join(workdir, "train.log"), "a") as log:
    code = subprocess.run([sys.executable, *command[1:]], stdout=log, stderr=subprocess.STDOUT,
                          check=False).returncode
  if code:
    raise ValueError(f"training {workdir} failed (exit {code}); see {workdir}/train.log.")
  print(f"  done in {time.time() - start:.0f} s", flush=True)


def draw_diagrams(out: str) -> list[dict]:
  """The thesis's Figures 1.1, 2.1, 2.2, 2.3 from θ built by the package."""
  import jax  # pylint: disable=g-import-not-at-top
  from vae_jax.plots import diagrams  # pylint: disable=g-import-not-at-top
  from vae_jax.plots import figures  # pylint: disable=g-import-not-at-top
  records = []
  for stem, (theta, title, bottleneck) in diagrams.thesis_networks(jax.random.PRNGKey(0)).items():
    fig, drawn = diagrams.diagram_figure(theta, bottleneck=bottleneck, title=title)
    records.append(dict(name=stem, description=f"{title}; widths {drawn.widths} read from θ,"
                        f" {drawn.num_connections} connections", run=None,
                        **figures.save(fig, os.path.join(out, "diagrams"), stem)))
  return records


def draw_run(workdir: str, out: str, command: str | None = None,
             pretrained: bool = False) -> tuple[list[dict], dict]:
  """The figures of one trained workdir and the run's record for the manifest.

  A workdir without checkpoints (e.g. the recorded IWAE runs, whose
  checkpoints were not kept) gives its training curves only.

  Args:
    workdir: the run's workdir, or with `pretrained` the folder of a zoo entry.
    out: figures go to <out>/<basename of workdir>/.
    command: the command that trained it; default: the "command" of its
      launch.json (written by experiments.reproduce), run.json or entry.json.
    pretrained: `workdir` is a zoo entry (`vae_jax.run.zoo`).
  """
  from vae_jax.plots import figures  # pylint: disable=g-import-not-at-top
  from vae_jax.run import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from vae_jax.run import metrics  # pylint: disable=g-import-not-at-top
  from vae_jax.run import zoo  # pylint: disable=g-import-not-at-top
  name, target = os.path.basename(os.path.normpath(workdir)), os.path.join(out, os.path.basename(os.path.normpath(workdir)))
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  if pretrained or os.path.isdir(os.path.join(workdir, "checkpoints")):
    config, model, params = (zoo.load_pretrained(name, os.path.dirname(os.path.normpath(workdir))) if pretrained
                             else workdir_lib.load_trained(workdir))
    records = figures.write_run_figures(config, model, params, target, metrics_path)
  else:
    config = workdir_lib.load_config(workdir)
    records = [dict(name="curves", description="training loss, validation and test scores against the"
                    " step (no checkpoint kept: curves only)",
                    **figures.save(figures.curves(metrics.read_metrics(metrics_path)), target, "curves"))]
  recorded = {"results.json": metrics.read_results(os.path.join(workdir, "results.json"))}
  for file in ("launch.json", "run.json", "entry.json"):
    if os.path.exists(os.path.join(workdir, file)):
      with open(os.path.join(workdir, file)) as f:
        recorded[file] = json.load(f)
  command = command or next((recorded[f].get("command") for f in ("launch.json", "run.json", "entry.json")
                             if f in recorded), None)
  run = {"workdir": workdir, "train_command": command, "config": config.to_dict(),
         "results": recorded.get("results.json")}
  return [dict(r, run=name) for r in records], run


def write_manifest(out: str, command: str, figures: list[dict], runs: dict) -> None:
  """<out>/manifest.json (everything) and manifest.md (a table) with paths relative to out."""
  rows = [dict(f, png=os.path.relpath(f["png"], out), pdf=os.path.relpath(f["pdf"], out))
          for f in figures]
  with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump({"command": command, "figures": rows, "runs": runs}, f, indent=2)
  lines = [f"# Figures\n\nDrawn by `{command}`.\n",
           "| figure | files | what | run |", "| --- | --- | --- | --- |"]
  for r in rows:
    lines.append(f"| {r['name']} | [{r['png']}]({r['png']}), [pdf]({r['pdf']}) |"
                 f" {r['description'].replace('|', '/')} | {r['run'] or 'built with vae_jax'} |")
  lines.append("\n## Runs\n")
  for name, run in runs.items():
    scale = run["config"]
    lines.append(f"* **{name}** (`{run['workdir']}`): trained by "
                 f"`{run['train_command'] or 'an unrecorded command; see its config.json'}`;"
                 f" {scale['data']['name']}, widths {tuple(scale['model']['hidden_widths'])},"
                 f" latent_dim {scale['model']['latent_dim']}, {scale['objective']['name']},"
                 f" {scale['training']['num_epochs']} epochs, seed {scale['seed']}.")
  with open(os.path.join(out, "manifest.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so tests can import the module)."""
  flags.DEFINE_multi_string("workdir", [], "Workdir of a trained run (repeatable).")
  flags.DEFINE_multi_string("pretrained", [], "A model of the zoo, e.g. iwae_1layer_k5 (repeatable).")
  flags.DEFINE_string("out", None, "Folder for the figures and the manifest.")
  flags.DEFINE_bool("all", False, "Also draw the recorded RUNS, training the missing ones.")
  flags.DEFINE_string("runs_root", "workdirs/figures", "Workdirs of RUNS (with --all).")
  flags.mark_flags_as_required(["out"])


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
  args = flags.FLAGS
  out = args.out
  from vae_jax.run import zoo  # pylint: disable=g-import-not-at-top
  workdirs = {workdir: None for workdir in args.workdir}   # workdir -> its training command
  pretrained = {zoo.entry_dir(name) for name in args.pretrained}
  workdirs.update((folder, None) for folder in sorted(pretrained))
  if args.all:
    for name in RUNS:
      workdir, command = os.path.join(args.runs_root, name), train_command(name, args.runs_root)
      train_missing(workdir, command)
      workdirs[workdir] = shlex.join(command)
    for workdir in sorted(glob.glob(os.path.join(RECORDED_RUNS, "*", "results.json"))):
      workdirs.setdefault(os.path.dirname(workdir), None)
  names = [os.path.basename(os.path.normpath(w)) for w in workdirs]
  if len(set(names)) < len(names):
    raise ValueError(f"workdirs {sorted(workdirs)} share a folder name; their figures would"
                     " overwrite each other in <out>/<name>; rename one.")
  figures, runs = draw_diagrams(out), {}
  for (workdir, command), name in zip(workdirs.items(), names):
    records, runs[name] = draw_run(workdir, out, command, workdir in pretrained)
    figures += records
  command = shlex.join(["python", "-m", "experiments.figures", *sys.argv[1:]])
  write_manifest(out, command, figures, runs)
  print(f"wrote {len(figures)} figures (PNG + PDF) and {out}/manifest.md")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
