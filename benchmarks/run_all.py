r"""The benchmark suite: vae_jax against a PyTorch reference and the machine's limit.

  pip install torch==2.13.0       # once; the PyTorch reference (not a vae_jax dependency)
  export VAE_JAX_RAW_DATA_DIR=/path/to/data    # offline machines (the default run loads MNIST)
  python -m benchmarks.run_all                 # writes benchmarks/results/benchmarks.{md,json}
  python -m benchmarks.run_all --only=families --torch=eager1,eager   # minutes: families.{md,json}

Measured in one run, side by side (each number the median and min–max over
`--repeats` interleaved rounds; ratios pair by pair within a round):

1. training throughput (examples/s, s/epoch of 50000 images, achieved GFLOP/s
   of the matmuls, 3·2·B·(M_once + k·M_sample) per step) of vae_jax's fused
   training step (`training.jit_train_steps`), its per-step loop (`jit_train_step`),
   and `benchmarks.torch_reference` (eager with 1 and `nproc` threads,
   `torch.compile`), for 784-200-200-50 tanh at B = 20, 100,
   784-512-256-32 relu at B = 128, and the families of issue 15 at the IWAE
   paper's B = 20: the two-layer model (ELBO, Monte Carlo KL) and the IWAE
   bound with k = 5 and k = 50 of the one-layer model;
2. the f32 matmul peak (the best of n×n jitted matmuls, n ∈ {1024, 2048, 4096})
   and, interleaved with each step, its fraction;
3. XLA_FLAGS variants, each in a fresh process, alternating with the default;
4. IS-NLL time, k = 5000, over a fraction of the 10000 test images,
   extrapolated linearly (said so in the table), for 784-200-200-50,
   784-512-256-32 and the two-layer model;
5. cold compile time of the first fused block, and the peak RSS of a short
   default training run (a subprocess; `resource.getrusage(RUSAGE_CHILDREN)`);
6. `benchmarks/seeds_benchmark.py` (N vmapped seeds vs N sequential runs) for
   both models, verbatim;
7. the quality-per-CPU-hour goal is read from `quality_per_hour.json`, written
   by its own hour-long command (`python -m benchmarks.quality_per_hour`);
8. `benchmarks/sweep_benchmark.py` (the sweep launcher's overhead per point,
   local and on Ray, and seeds trained together), its table appended verbatim.
`--only=families` measures only sections 1–2 for the families' cases and
section 4 for the two-layer model and, to compare, 784-200-200-50; it writes
families.{md,json} beside (never over) the full run's files. The report
judges every goal from the measurements and, where one is missed, says why
(`benchmarks.report`).
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from benchmarks import jax_steps
from benchmarks import report
from benchmarks import timing

_REPEATS = flags.DEFINE_integer("repeats", 5, "Interleaved timed rounds per measurement.")
_EXAMPLES = flags.DEFINE_integer(
    "examples", 20000, "Training examples × latent samples per timed call (≥ 0.3 s of work).")
_TORCH = flags.DEFINE_list("torch", ["eager1", "eager", "compile1"],
                           "PyTorch variants: eager (nproc threads), eager1 (1 thread), compile1.")
_XLA_FLAGS = flags.DEFINE_list(
    "xla_flags", ["--xla_cpu_use_onednn=true", "--xla_cpu_use_xnnpack=true",
                  "--xla_cpu_multi_thread_eigen=false", "--xla_cpu_prefer_vector_width=512"],
    "XLA_FLAGS variants compared with the default (empty list: skip).")
_FLAG_ROUNDS = flags.DEFINE_integer("flag_rounds", 3, "Alternating processes per XLA_FLAGS variant.")
_IS_IMAGES = flags.DEFINE_integer("is_images", 100, "Test images timed for the IS-NLL extrapolation.")
_ONLY = flags.DEFINE_enum("only", "all", ["all", "families"],
                          "all: every section; families: the issue-15 cases and their IS-NLL only.")
_OUT = flags.DEFINE_string("out", str(pathlib.Path(__file__).parent / "results"), "Results folder.")

REPO = pathlib.Path(__file__).resolve().parents[1]
TEST_IMAGES = 10000
IS_NLL_CASES = {"all": (jax_steps.CASES[0], jax_steps.CASES[2], jax_steps.FAMILY_CASES[0]),
                "families": (jax_steps.CASES[0], jax_steps.FAMILY_CASES[0])}


def reference_model_kwargs(config) -> dict:
  """`torch_reference.Vae`'s arguments (but data_dim) for an experiment config's model and objective."""
  model = config.model
  return {"hidden_widths": model.hidden_widths,
          "latent_dims": (model.latent_dim, *model.upper_latent_dims),
          "activation": model.activation, "upper_hidden_widths": model.upper_hidden_widths,
          "objective": config.objective.name, "num_samples": config.objective.num_samples}


def torch_runner(case: jax_steps.Case, variant: str, num_steps: int):
  """`num_steps` steps of the PyTorch reference of `case` (variant as in --torch)."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_reference  # pylint: disable=g-import-not-at-top
  config = jax_steps.experiment_config(case)
  threads = 1 if variant.endswith("1") else len(os.sched_getaffinity(0))
  step = torch_reference.make_step(
      **reference_model_kwargs(config), learning_rate=config.optimizer.learning_rate,
      eps=config.optimizer.eps, betas=(config.optimizer.b1, config.optimizer.b2),
      compile=variant.startswith("compile"),
      dynamic_binarization=config.data.name == "dynamic_binarized_mnist")
  batches = torch.from_numpy(jax_steps.random_batches(num_steps, case.batch_size))

  def run():
    torch.set_num_threads(threads)
    for batch in batches:
      loss = step(batch)
    float(loss)
  return run


def measure_training(peak: dict, cases) -> dict:
  """Section 1–2: every runner of a case interleaved with the peak matmul."""
  results = {}
  for case in cases:
    num_samples = jax_steps.experiment_config(case).objective.num_samples
    num_steps = max(1, _EXAMPLES.value // (case.batch_size * num_samples))
    runners = {"vae_jax fused": jax_steps.train_runner(case, num_steps, fused=True),
               "vae_jax per-step": jax_steps.train_runner(case, num_steps, fused=False)}
    for variant in _TORCH.value:
      runners[f"torch {variant}"] = torch_runner(case, variant, num_steps)
    runners["matmul peak"] = jax_steps.matmul_runner(peak["size"])
    times = timing.interleaved(runners, _REPEATS.value)
    peak_gflops = [2 * peak["size"] ** 3 / t / 1e9 for t in times.pop("matmul peak")]
    results[case.name] = {"num_steps": num_steps, "batch_size": case.batch_size,
                          "num_samples": num_samples, "step_gflop": jax_steps.step_flops(case) / 1e9,
                          "peak_gflops": peak_gflops, "seconds": times}
    print(case.name, {k: round(num_steps * case.batch_size / np.median(v)) for k, v in times.items()},
          flush=True)
  return results


def measure_xla_flags() -> dict:
  """Section 3: `python -m benchmarks.jax_steps` under each XLA_FLAGS, alternating processes."""
  variants = ["", *_XLA_FLAGS.value]
  runs = {v: [] for v in variants}
  for _ in range(_FLAG_ROUNDS.value):
    for variant in variants:
      env = dict(os.environ, XLA_FLAGS=variant)
      out = subprocess.run([sys.executable, "-m", "benchmarks.jax_steps", "--repeats=3"],
                           cwd=REPO, env=env, capture_output=True, text=True, check=True)
      runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
      print("XLA_FLAGS", repr(variant), "done", flush=True)
  return runs


def measure_is_nll(cases) -> dict:
  """Section 4: seconds of IS-NLL (k=5000) over `--is_images` images, and × 10000/n."""
  results = {}
  for case in cases:
    run = jax_steps.is_nll_runner(case, _IS_IMAGES.value)
    seconds = timing.interleaved({"is": run}, max(2, _REPEATS.value // 2))["is"]
    model = jax_steps.experiment_config(case).model
    results[case.name.split(",")[0]] = {
        "images": _IS_IMAGES.value, "seconds": seconds,
        "extrapolated_s": [s * TEST_IMAGES / _IS_IMAGES.value for s in seconds],
        "widths": [784, *model.hidden_widths, model.latent_dim, *model.upper_latent_dims],
        "gflop_10000": jax_steps.is_nll_flops(case, TEST_IMAGES) / 1e9}
  return results


def measure_default_run() -> dict:
  """Section 5: cold compile of the first block, and peak RSS of a short default run."""
  out = subprocess.run([sys.executable, "-m", "benchmarks.jax_steps", "--mode=compile"],
                       cwd=REPO, capture_output=True, text=True, check=True)
  compile_result = json.loads(out.stdout.strip().splitlines()[-1])
  command = [sys.executable, "-m", "experiments.train", "--config=experiments/configs/default.py",
             "--config.training.num_epochs=1", "--config.eval.num_examples=1000",
             "--config.training.progress_bar=False"]
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    subprocess.run(command + [f"--workdir={workdir}"], cwd=REPO, check=True,
                   capture_output=True, text=True)
    wall = time.perf_counter() - start
  peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
  return {"compile": compile_result, "run_wall_s": wall, "peak_rss_gib": peak_kib / 2 ** 20,
          "run_command": " ".join(["python"] + command[1:] + ["--workdir=<tmp>"])}


SEEDS_CONFIGS = {"784-200-200-50 tanh, B=20": "experiments/configs/iwae.py:k=1",
                 "784-512-256-32 relu, B=128": "experiments/configs/default.py"}


def measure_seeds() -> dict[str, str]:
  """Section 6: the output of benchmarks/seeds_benchmark.py for both models, verbatim."""
  script = REPO / "benchmarks" / "seeds_benchmark.py"
  outputs = {}
  for model, config in SEEDS_CONFIGS.items():
    out = subprocess.run([sys.executable, str(script), f"--config={config}"], cwd=REPO,
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    outputs[model] = out.stdout + (
        f"\n(exit {out.returncode}: {out.stderr.strip()[-500:]})" if out.returncode else "")
    print("seeds", model, outputs[model], flush=True)
  return outputs


def measure_sweeps() -> dict:
  """Section 8: benchmarks/sweep_benchmark.py (writes sweep_benchmark.{json,md} next to ours)."""
  out = subprocess.run([sys.executable, "-m", "benchmarks.sweep_benchmark", f"--out={_OUT.value}"],
                       cwd=REPO, capture_output=True, text=True, check=False)
  markdown = pathlib.Path(_OUT.value) / "sweep_benchmark.md"
  if out.returncode or not markdown.exists():
    return {"markdown": f"sweep benchmark failed (exit {out.returncode}): {out.stderr.strip()[-500:]}\n"}
  print("sweeps", markdown.read_text(), flush=True)
  return {"markdown": markdown.read_text()}


def read_quality_per_hour() -> dict | None:
  """benchmarks/results/quality_per_hour.json (an hour-long run of its own), if present."""
  path = REPO / "benchmarks" / "results" / "quality_per_hour.json"
  return json.loads(path.read_text()) if path.exists() else None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  results = {"machine": timing.machine(), "command": " ".join(["python -m benchmarks.run_all"] + sys.argv[1:]),
             "xla_flags_env": os.environ.get("XLA_FLAGS", "")}
  everything = _ONLY.value == "all"
  results["matmul_peak"] = jax_steps.matmul_peak(repeats=_REPEATS.value)
  print("matmul peak", results["matmul_peak"], flush=True)
  cases = (*jax_steps.CASES, *jax_steps.FAMILY_CASES) if everything else jax_steps.FAMILY_CASES
  results["training"] = measure_training(results["matmul_peak"], cases)
  results["is_nll"] = measure_is_nll(IS_NLL_CASES[_ONLY.value])
  print("is-nll", {k: np.median(v["extrapolated_s"]) for k, v in results["is_nll"].items()}, flush=True)
  if everything:
    results["default_run"] = measure_default_run()
    print("default run", results["default_run"], flush=True)
    results["xla_flags"] = measure_xla_flags() if _XLA_FLAGS.value else {}
    results["seeds"] = measure_seeds()
    results["quality_per_hour"] = read_quality_per_hour()
    results["sweeps"] = measure_sweeps()
  results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
  out = pathlib.Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  name = "benchmarks" if everything else _ONLY.value
  (out / f"{name}.json").write_text(json.dumps(results, indent=1))
  table = report.markdown(results)
  if "sweeps" in results:
    table += "\n## Sweep launcher\n\n" + results["sweeps"]["markdown"]
  (out / f"{name}.md").write_text(table)
  print(table)


if __name__ == "__main__":
  from experiments import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)
