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


def mlp_vae_matmul_flops(hidden_widths: Sequence[int], latent_dim: int, batch_size: int,
                         data_dim: int = 784) -> int:
  """FLOPs of the matmuls of one training step: 3 · 2 · B · Σ_i d_{i−1} d_i.

  Encoder (D, h_1, …, h_m, 2d) and decoder (d, h_m, …, h_1, D); the forward
  pass is 2 B Σ d_{i−1} d_i multiply-adds counted as 2 FLOPs, and the backward
  pass twice that (gradients of inputs and of weights).
  """
  encoder = (data_dim, *hidden_widths, 2 * latent_dim)
  decoder = (latent_dim, *reversed(hidden_widths), data_dim)
  macs = sum(a * b for widths in (encoder, decoder) for a, b in zip(widths[:-1], widths[1:]))
  return 3 * 2 * batch_size * macs


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
