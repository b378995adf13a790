"""Timing helpers shared by the benchmarks: interleaved repeats, FLOPs, the machine.

The CPU may be shared, so alternatives are timed interleaved (A, B, A, B, …)
and compared by the median of their pair-by-pair ratios: a burst of load hits
both members of a pair alike.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from typing import Callable, Mapping, Sequence


def seconds(run: Callable[[], object]) -> float:
  """Wall-clock seconds of one call of `run` (which must block until done)."""
  start = time.perf_counter()
  run()
  return time.perf_counter() - start


def interleaved(runners: Mapping[str, Callable[[], object]], repeats: int,
                warmup: int = 1) -> dict[str, list[float]]:
  """Times every runner `repeats` times in the order A, B, …, A, B, …

  Args:
    runners: name -> a blocking call to time.
    repeats: timed rounds.
    warmup: untimed rounds first (compilation, caches).

  Returns:
    name -> the `repeats` wall-clock times in seconds, round by round.
  """
  for _ in range(warmup):
    for run in runners.values():
      run()
  times = {name: [] for name in runners}
  for _ in range(repeats):
    for name, run in runners.items():
      times[name].append(seconds(run))
  return times


def summary(values: Sequence[float]) -> dict:
  """{"median", "min", "max"} of some measurements."""
  return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def pair_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> dict:
  """Summary of numerator[i] / denominator[i] over rounds i (pair by pair)."""
  return summary([a / b for a, b in zip(numerator, denominator)])


def matmul_macs(networks: Sequence[Sequence[int]]) -> int:
  """Multiply-adds of one row through each network of widths (d_0, …, d_L): Σ Σ_i d_{i−1} d_i."""
  return sum(a * b for widths in networks for a, b in zip(widths[:-1], widths[1:]))


def vae_matmul_flops(once: Sequence[Sequence[int]], per_sample: Sequence[Sequence[int]],
                     batch_size: int, num_samples: int = 1, backward: bool = True) -> int:
  """FLOPs of the matmuls of a batch: 2 · B · (M_once + k · M_sample), ×3 with the backward pass.

  `once` are the networks run once per example (q(z₁|x)), `per_sample` those
  run for each of the k latent samples (p(x|z₁), and q(z_{l+1}|z_l) and
  p(z_l|z_{l+1}) above). A multiply-add counts as 2 FLOPs; the backward pass
  costs twice the forward (gradients of inputs and of weights).
  """
  forward = 2 * batch_size * (matmul_macs(once) + num_samples * matmul_macs(per_sample))
  return 3 * forward if backward else forward


def machine() -> dict:
  """Date, CPU model and flags of note, `nproc`, memory and the load average."""
  cpu = {}
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        cpu.setdefault(key.strip(), value.strip())
  except OSError:
    pass
  flags = set(cpu.get("flags", "").split())
  memory_gib = None
  try:
    with open("/proc/meminfo") as f:
      memory_gib = round(int(f.readline().split()[1]) / 2**20, 1)
  except (OSError, ValueError, IndexError):
    pass
  return {
      "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
      "cpu": cpu.get("model name", platform.processor()),
      "cpu_family_model": f"{cpu.get('cpu family', '?')}/{cpu.get('model', '?')}",
      "simd": " ".join(sorted(f for f in flags if f in ("avx2", "fma", "avx512f", "avx512_bf16"))),
      "nproc": len(os.sched_getaffinity(0)),
      "memory_gib": memory_gib,
      "load_average": [round(x, 2) for x in os.getloadavg()],
      "python": platform.python_version(),
  }
