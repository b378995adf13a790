r"""Throughput of N members in one vmapped program against N sequential runs.

  python benchmarks/seeds_benchmark.py                       # default VAE 784-512-256-32, batch 128
  python benchmarks/seeds_benchmark.py --sizes=1,2,4,8 --steps=50 --repeats=5
  python benchmarks/seeds_benchmark.py --config=experiments/configs/iwae.py:k=1   # 784-200-200-50, batch 20

For each N, the same work (N members × `--steps` training steps of the
config's model, objective and batch size on random images in [0, 1]) is timed two ways, side by side in
this one process:

* vmapped: `seeds.vmap_train_steps`, one jitted call for all N members;
* sequential: `training.jit_train_steps` (the single-run program, compiled
  once) called N times one after the other.

Compilation is excluded (one warm-up call each); every timing is the median of
`--repeats`, the two ways alternating so that a change of machine load hits
both alike. Printed: member-steps per second for both and their ratio.
"""

import functools
import statistics
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from vae_jax.run import optimizers
from vae_jax.scale import seeds
from vae_jax.models import build
from vae_jax.run import training

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/default.py", "Config whose model, objective and batch size are timed.")

_SIZES = flags.DEFINE_list("sizes", ["1", "2", "4", "8"], "Numbers of members N.")
_STEPS = flags.DEFINE_integer("steps", 50, "Training steps per member and timing.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timings per measurement (the median is printed).")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Batch size; 0 = the config's.")
_EXAMPLES = flags.DEFINE_integer("examples", 10000, "Random training images.")


def median_seconds(functions, repeats: int) -> list[float]:
  """Median wall time of each function; the timings alternate so that load drift hits all alike."""
  for function in functions:
    jax.block_until_ready(function())     # warm-up: compiles
  times = [[] for _ in functions]
  for _ in range(repeats):
    for function, measured in zip(functions, times):
      start = time.perf_counter()
      jax.block_until_ready(function())
      measured.append(time.perf_counter() - start)
  return [statistics.median(t) for t in times]


def main(argv):
  del argv
  config = _CONFIG.value
  model = build.build_model(config)
  optimizer = optimizers.make_optimizer(config.optimizer, 10 ** 6)
  make_step_fn = functools.partial(training.step_fn_from_config, config, model, optimizer)
  images = np.random.default_rng(0).uniform(size=(_EXAMPLES.value, 784)).astype(np.float32)
  device_images = jax.device_put(images)
  steps, batch = _STEPS.value, _BATCH.value or config.training.batch_size
  single_program = training.jit_train_steps(make_step_fn())
  vmapped_program = seeds.vmap_train_steps(make_step_fn(member_axis=seeds.MEMBER_AXIS))
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); model"
        f" {model.encoder_widths} -> {model.decoder_widths} ({model.activation}, {config.objective.name});"
        f" batch {batch}; {steps} steps per member;"
        f" median of {_REPEATS.value}")
  print(f"{'N':>3} {'vmapped member-steps/s':>24} {'sequential member-steps/s':>27} {'speed-up':>9}")
  for size in map(int, _SIZES.value):
    member_seeds = list(range(size))
    indices = seeds.member_indices(member_seeds, 0, len(images), batch)[:, :steps]   # [N, steps, B]
    batches = [jax.device_put(images[indices[i]]) for i in range(size)]   # [steps, B, 784] each
    states = [seeds.init_states(model, optimizer, member_seeds, [1.0] * size)]
    singles = [[training.init_state(model, optimizer, s)] for s in member_seeds]

    def vmapped():
      states[0], measured = vmapped_program(states[0], device_images, indices)
      return measured["loss"]

    def sequential():
      losses = []
      for i in range(size):
        singles[i][0], measured = single_program(singles[i][0], batches[i])
        losses.append(measured["loss"])
      return losses

    vmapped_s, sequential_s = median_seconds([vmapped, sequential], _REPEATS.value)
    work = size * steps
    print(f"{size:>3} {work / vmapped_s:>24.1f} {work / sequential_s:>27.1f}"
          f" {sequential_s / vmapped_s:>8.2f}x", flush=True)


if __name__ == "__main__":
  app.run(main)
