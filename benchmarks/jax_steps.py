r"""The JAX side of the benchmarks: vae_jax's training step, the matmul peak, IS-NLL, compile.

Every runner here is a blocking zero-argument call, timed by `timing`. The
training step is exactly the one `vae_jax.run.train.train_and_evaluate` runs: the
experiment config's model, optimizer and objective through
`training.make_step_fn`, on random images in [0, 1] (dynamically binarised
inside the step where the config's dataset asks for it).

Run on its own (a fresh process, e.g. under other XLA_FLAGS) it prints the
throughput of the training-step cases as JSON; `run_all.py` uses that to
compare XLA flags:

  python -m benchmarks.jax_steps --repeats=5
"""

from __future__ import annotations

import json
import sys
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import timing
from experiments.configs import default as default_configs
from experiments.configs import iwae as iwae_configs
from vae_jax.inference import evaluation
from vae_jax.models import build
from vae_jax.run import optimizers
from vae_jax.run import training


class Case(NamedTuple):
  """A benchmarked training step: an experiment config (and its argument) at a batch size."""
  name: str
  config: str          # "iwae" (experiments/configs/iwae.py) or "default" (784-512-256-32 relu)
  batch_size: int
  arg: str = "k=1"     # the iwae config's argument


CASES = (Case("784-200-200-50 tanh, B=20", "iwae", 20),
         Case("784-200-200-50 tanh, B=100", "iwae", 100),
         Case("784-512-256-32 relu, B=128", "default", 128))
# The model families of issue 15 at the IWAE paper's batch 20.
TWO_LAYERS = "2 layers 784-100-100-z100-50-50-z50 tanh"
FAMILY_CASES = (Case(f"{TWO_LAYERS}, ELBO, B=20", "iwae", 20, "layers=2,k=1"),
                Case("784-200-200-50 tanh, IWAE k=5, B=20", "iwae", 20, "objective=iwae,k=5"),
                Case("784-200-200-50 tanh, IWAE k=50, B=20", "iwae", 20, "objective=iwae,k=50"))
TRAIN_EXAMPLES = 50000   # one epoch of the MNIST training split


def experiment_config(case: Case):
  """The experiment's ConfigDict with the case's batch size."""
  config = iwae_configs.get_config(case.arg) if case.config == "iwae" else default_configs.get_config()
  config.training.batch_size = case.batch_size
  return config


def model_networks(model) -> tuple[list, list]:
  """(networks run once per example, networks run per latent sample), each a list of dense widths."""
  per_sample = [model.decoder_widths, *(q.widths for q in model.upper_posteriors),
                *(p.widths for p in model.conditional_priors)]
  return [model.encoder_widths], per_sample


def step_flops(case: Case) -> int:
  """Matmul FLOPs of one training step of `case` (forward and backward)."""
  config = experiment_config(case)
  once, per_sample = model_networks(build.build_model(config))
  return timing.vae_matmul_flops(once, per_sample, case.batch_size, config.objective.num_samples)


def step_function(config) -> tuple[Callable, training.TrainState]:
  """(`make_step_fn` of the config, the initial state), as `train_and_evaluate` builds them."""
  model = build.build_model(config)
  optimizer = optimizers.make_optimizer(config.optimizer, total_steps=10 ** 6)
  step_fn = training.step_fn_from_config(config, model, optimizer)
  return step_fn, training.state_from_config(config, model, optimizer)


def random_batches(num_steps: int, batch_size: int, seed: int = 0) -> np.ndarray:
  """[num_steps, B, 784] images uniform in [0, 1]."""
  rng = np.random.default_rng(seed)
  return rng.uniform(size=(num_steps, batch_size, 784)).astype(np.float32)


def train_runner(case: Case, num_steps: int, fused: bool = True) -> Callable[[], None]:
  """`num_steps` training steps: one `jit_train_steps` call (fused) or a per-step loop."""
  step_fn, state = step_function(experiment_config(case))
  batches = jax.device_put(random_batches(num_steps, case.batch_size))
  holder = [state]
  if fused:
    program = training.jit_train_steps(step_fn)

    def run():
      holder[0], measured = program(holder[0], batches)
      jax.block_until_ready(measured)
  else:
    program = training.jit_train_step(step_fn)
    per_step = [batches[i] for i in range(num_steps)]

    def run():
      state = holder[0]
      for batch in per_step:
        state, measured = program(state, batch)
      holder[0] = state
      jax.block_until_ready(measured)
  return run


def matmul_runner(n: int) -> Callable[[], None]:
  """One jitted [n, n] @ [n, n] float32 product (2 n³ FLOPs)."""
  a = jax.device_put(np.random.default_rng(0).standard_normal((n, n), np.float32))
  b = jax.device_put(np.random.default_rng(1).standard_normal((n, n), np.float32))
  product = jax.jit(jnp.matmul)
  return lambda: product(a, b).block_until_ready()


def matmul_peak(sizes=(1024, 2048, 4096), repeats: int = 5) -> dict:
  """GFLOP/s of large jitted f32 matmuls: per size the median over `repeats`; peak = best size."""
  per_size = {}
  for n in sizes:
    run = matmul_runner(n)
    times = timing.interleaved({"matmul": run}, repeats)["matmul"]
    per_size[n] = {k: 2 * n ** 3 / v / 1e9 for k, v in timing.summary(times).items()}
    per_size[n]["min"], per_size[n]["max"] = per_size[n]["max"], per_size[n]["min"]
  best = max(per_size, key=lambda n: per_size[n]["median"])
  return {"gflops": per_size[best]["median"], "size": best, "per_size": per_size}


def compile_seconds(case: Case, steps_per_scan: int) -> dict:
  """Seconds to trace+lower and to compile the first fused block of a training run."""
  step_fn, state = step_function(experiment_config(case))
  batches = random_batches(steps_per_scan, case.batch_size)
  start = time.perf_counter()
  lowered = training.jit_train_steps(step_fn).lower(state, batches)
  traced = time.perf_counter() - start
  lowered.compile()
  return {"trace_lower_s": traced, "compile_s": time.perf_counter() - start - traced,
          "total_s": time.perf_counter() - start}


def is_nll_runner(case: Case, num_images: int, num_samples: int = 5000,
                  chunk_size: int = 500) -> Callable[[], None]:
  """`evaluation.evaluate` with IS k=`num_samples` over `num_images` images."""
  config = experiment_config(case)
  model = build.build_model(config)
  params = model.init(jax.random.PRNGKey(0))
  images = (random_batches(1, num_images)[0] > 0.5).astype(np.float32)
  return lambda: evaluation.evaluate(
      model, params, images, jax.random.PRNGKey(1), batch_size=config.eval.batch_size,
      num_samples=num_samples, chunk_size=chunk_size)


def is_nll_flops(case: Case, num_images: int, num_samples: int = 5000) -> int:
  """Matmul FLOPs of `evaluate` with IS over `num_images` images: forward only, k + 1 samples."""
  once, per_sample = model_networks(build.build_model(experiment_config(case)))
  return timing.vae_matmul_flops(once, per_sample, num_images, num_samples + 1, backward=False)


def train_throughput(repeats: int, num_steps: int) -> dict:
  """examples/s of the fused training step of every case, interleaved over cases."""
  runners = {case.name: train_runner(case, num_steps) for case in CASES}
  times = timing.interleaved(runners, repeats)
  return {case.name: [num_steps * case.batch_size / t for t in times[case.name]]
          for case in CASES}


def main(argv) -> None:
  """`--mode=throughput` (default): examples/s and the matmul peak; `--mode=compile`."""
  options = dict(a.lstrip("-").split("=") for a in argv[1:])
  if options.get("mode") == "compile":
    case = Case("default", "default", 128)
    steps_per_scan = experiment_config(case).training.steps_per_scan
    print(json.dumps(dict(compile_seconds(case, steps_per_scan), steps_per_scan=steps_per_scan)))
    return
  repeats, steps = int(options.get("repeats", 5)), int(options.get("steps", 200))
  print(json.dumps({"examples_per_s": train_throughput(repeats, steps),
                    "matmul_peak": matmul_peak(repeats=repeats)}))


if __name__ == "__main__":
  main(sys.argv)
