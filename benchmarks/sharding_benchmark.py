r"""Training throughput of the data-parallel step per device count.

  python benchmarks/sharding_benchmark.py --fake_cpu_devices=8          # 1, 2, 4, 8 fake CPU devices
  python benchmarks/sharding_benchmark.py                               # 1, 2, 4, … real devices (GPU/TPU)

For each device count n (powers of two up to the number of devices, or
`--device_counts`) it builds `sharding.make_mesh(jax.devices()[:n])`, puts
one epoch of `--steps` global batches of `--batch_size` random images with
`sharding.put_epoch` (split along the batch) and the replicated `TrainState`,
and times the same jitted `training.jit_train_steps` block that
`train.train_and_evaluate` runs (the default MLP VAE 784-512-256-32, Adam).
Each count is compiled and run once untimed, then timed `--repeats` times;
the median is reported as examples/s.

`--fake_cpu_devices=N` splits the host CPU into N XLA devices
(`jax_num_cpu_devices`). They are FAKE: they share the same cores, so their
throughput measures the overhead of the sharded program, not a speed-up. Real
scaling needs real devices (several GPUs or a TPU).
"""

import json
import statistics
import time

from absl import app
from absl import flags

from experiments import cli

_FAKE = flags.DEFINE_integer("fake_cpu_devices", 0, "Split the CPU into this many XLA devices (0: real devices).")
_COUNTS = flags.DEFINE_list("device_counts", [], "Device counts to time (default 1, 2, 4, … up to all).")
_BATCH = flags.DEFINE_integer("batch_size", 512, "Global batch size (a multiple of every device count).")
_STEPS = flags.DEFINE_integer("steps", 20, "Steps per timed lax.scan block.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed blocks per device count (the median is reported).")
_HIDDEN = flags.DEFINE_list("hidden_widths", ["512", "256"], "Hidden widths of the MLP VAE.")
_LATENT = flags.DEFINE_integer("latent_dim", 32, "Latent dimension.")


def time_device_count(count: int) -> dict:
  """Median examples/s of the jitted training block on the first `count` devices."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vae_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from vae_jax.run import optimizers  # pylint: disable=g-import-not-at-top
  from vae_jax.scale import sharding  # pylint: disable=g-import-not-at-top
  from vae_jax.run import training  # pylint: disable=g-import-not-at-top
  from vae_jax.models import vae as vae_lib  # pylint: disable=g-import-not-at-top

  mesh = sharding.make_mesh(jax.devices()[:count])
  model = vae_lib.VAE(hidden_widths=tuple(int(w) for w in _HIDDEN.value), latent_dim=_LATENT.value)
  optimizer = optimizers.make_optimizer(config_lib.default_config().optimizer, 10**6)
  step_fn = training.make_step_fn(model, optimizer, objective="elbo")
  train_steps = training.jit_train_steps(step_fn)
  images = np.random.default_rng(0).random((_STEPS.value * _BATCH.value, 784), dtype=np.float32)
  epoch = sharding.put_epoch(images, _BATCH.value, seed=0, epoch=0, mesh=mesh)
  state = sharding.replicate(training.init_state(model, optimizer, seed=0), mesh)
  state, measured = train_steps(state, epoch)                        # compile + warm up
  jax.block_until_ready(measured)
  seconds = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    state, measured = train_steps(state, epoch)
    jax.block_until_ready(measured)
    seconds.append(time.perf_counter() - start)
  median = statistics.median(seconds)
  examples = _STEPS.value * _BATCH.value
  return {"devices": count, "platform": jax.devices()[0].platform, "fake_cpu_devices": bool(_FAKE.value),
          "global_batch": _BATCH.value, "steps": _STEPS.value, "median_s": round(median, 4),
          "examples_per_s": round(examples / median, 1),
          "examples_per_s_per_device": round(examples / median / count, 1),
          "final_loss": round(float(measured["loss"][-1]), 3)}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  import jax  # pylint: disable=g-import-not-at-top
  if _FAKE.value:
    jax.config.update("jax_num_cpu_devices", _FAKE.value)
  available = jax.device_count()
  counts = [int(c) for c in _COUNTS.value] or [2**i for i in range(available.bit_length())
                                               if 2**i <= available]
  if max(counts) > available:
    raise ValueError(f"--device_counts asks for {max(counts)} devices but {available} exist;"
                     " lower it or set --fake_cpu_devices.")
  print(f"# {available} {jax.devices()[0].platform} devices"
        f"{' (FAKE: one host CPU split into XLA devices, sharing its cores)' if _FAKE.value else ''}"
        f"; {jax.devices()[0].device_kind}", flush=True)
  baseline = None
  for count in counts:
    row = time_device_count(count)
    baseline = baseline or row["examples_per_s"]
    row["speedup_vs_first"] = round(row["examples_per_s"] / baseline, 2)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
  cli.run(main)
