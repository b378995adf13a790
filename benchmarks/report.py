"""The Markdown report of `run_all`'s results: tables, ratios and the goals."""

from __future__ import annotations

import re
import statistics

from benchmarks import jax_steps
from benchmarks import timing

FUSED = "vae_jax fused"


def _fmt(summary: dict, digits: int = 0, suffix: str = "") -> str:
  f = f"{{:.{digits}f}}"
  return (f"{f.format(summary['median'])}{suffix} "
          f"({f.format(summary['min'])}–{f.format(summary['max'])})")


def _rates(values, scale: float) -> dict:
  return timing.summary([scale / v for v in values])


def training_rows(results: dict) -> tuple[list[str], dict]:
  """The throughput table and, per case, the measured ratios the goals need."""
  lines = ["| model, batch | implementation | examples/s | s/epoch | GFLOP/s | % of peak"
           " | vae_jax fused ÷ this |", "|---|---|---|---|---|---|---|"]
  measured = {}
  for case in jax_steps.CASES:
    entry = results["training"][case.name]
    examples = entry["num_steps"] * case.batch_size
    per_epoch = jax_steps.TRAIN_EXAMPLES // case.batch_size * case.batch_size
    fused = entry["seconds"][FUSED]
    measured[case.name] = {}
    for name, seconds in entry["seconds"].items():
      gflops = [entry["step_gflop"] * entry["num_steps"] / s for s in seconds]
      fraction = timing.summary([100 * g / p for g, p in zip(gflops, entry["peak_gflops"])])
      ratio = timing.pair_ratios(seconds, fused)          # t_this / t_fused = speed-up of fused
      measured[case.name][name] = {"ratio": ratio, "fraction": fraction}
      lines.append(
          f"| {case.name} | {name} | {_fmt(_rates(seconds, examples))}"
          f" | {statistics.median(seconds) * per_epoch / examples:.2f}"
          f" | {_fmt(timing.summary(gflops), 1)} | {_fmt(fraction, 0, '%')}"
          f" | {'—' if name == FUSED else _fmt(ratio, 2, '×')} |")
  return lines, measured


def flag_rows(runs: dict) -> list[str]:
  """examples/s per XLA_FLAGS variant, and its speed-up over the default process of the same round."""
  if not runs:
    return ["(skipped)"]
  names = [case.name for case in jax_steps.CASES]
  lines = ["| XLA_FLAGS | " + " | ".join(f"{n}: examples/s (× default)" for n in names)
           + " | matmul peak GFLOP/s |", "|---|" + "---|" * (len(names) + 1)]
  default = runs[""]
  for variant, rounds in runs.items():
    cells = []
    for n in names:
      rate = [statistics.median(r["examples_per_s"][n]) for r in rounds]
      base = [statistics.median(r["examples_per_s"][n]) for r in default]
      cells.append(f"{statistics.median(rate):.0f} ({_fmt(timing.pair_ratios(rate, base), 2, '×')})")
    peak = statistics.median(r["matmul_peak"]["gflops"] for r in rounds)
    lines.append(f"| `{variant or '(default)'}` | " + " | ".join(cells) + f" | {peak:.0f} |")
  return lines


def _seeds_speedup(text: str | None) -> float | None:
  for line in (text or "").splitlines():
    match = re.match(r"\s*8\s+.*\s([\d.]+)x\s*$", line)
    if match:
      return float(match.group(1))
  return None


def goal_rows(results: dict, measured: dict) -> list[str]:
  """Each goal of issue 9 with the measured value and met / not met."""
  lines = ["| goal | measured | met? |", "|---|---|---|"]

  def row(goal, value, ok):
    lines.append(f"| {goal} | {value} | {'yes' if ok else 'NO'} |")

  for case, by_impl in measured.items():
    eager = {k: v for k, v in by_impl.items() if k.startswith("torch eager")}
    if eager:
      best = min(eager, key=lambda k: eager[k]["ratio"]["median"])   # the fastest eager reference
      ratio = eager[best]["ratio"]["median"]
      row(f"fused step ≥ 2.0× PyTorch eager, {case}", f"{ratio:.2f}× vs {best} (its best threads)",
          ratio >= 2.0)
  default = jax_steps.CASES[2].name
  fraction = measured[default][FUSED]["fraction"]["median"]
  row(f"≥ 75% of the matmul peak, {default}", f"{fraction:.0f}%", fraction >= 75)
  goal_model = jax_steps.CASES[0].name
  speedup = _seeds_speedup((results.get("seeds") or {}).get(goal_model))
  row(f"8 vmapped seeds ≥ 3× 8 sequential runs, {goal_model}",
      "not run" if speedup is None else f"{speedup:.2f}×", speedup is not None and speedup >= 3)
  for model, entry in results["is_nll"].items():
    seconds = statistics.median(entry["extrapolated_s"])
    row(f"IS-NLL k=5000 on 10000 images ≤ 300 s, {model}",
        f"{seconds:.0f} s (extrapolated from {entry['images']} images)", seconds <= 300)
  run = results["default_run"]
  row("first-step compile ≤ 10 s", f"{run['compile']['total_s']:.1f} s", run["compile"]["total_s"] <= 10)
  row("default run peak memory ≤ 2 GiB", f"{run['peak_rss_gib']:.2f} GiB", run["peak_rss_gib"] <= 2)
  quality = results.get("quality_per_hour")
  if quality:
    final = quality["final"]
    value = (f"{final['nll']:.2f} ± {final['nll_stderr']:.2f} nats after"
             f" {final['train_wall_time_s'] / 60:.1f} min ({quality['machine_start']['date']},"
             " quality_per_hour.md)")
  row("86.76 nats within 1 CPU-hour (784-200-200-50, dynamic MNIST)",
      value if quality else "not run (`python -m benchmarks.quality_per_hour`, ≥ 1 h)",
      bool(quality and quality["met"]))
  return lines


def markdown(results: dict) -> str:
  """The whole report."""
  m = results["machine"]
  peak = results["matmul_peak"]
  training, measured = training_rows(results)
  out = [
      "# vae_jax benchmarks", "",
      f"{m['date']}; {m['cpu']} (family/model {m['cpu_family_model']}, {m['simd']}), "
      f"nproc = {m['nproc']}, {m['memory_gib']} GiB; Python {m['python']}; "
      f"load average (1, 5, 15 min) {m['load_average']} at the start, "
      f"{m.get('load_average_end')} at the end (the CPU is shared: compare ratios, not absolute rates).",
      f"Command: `{results['command']}`" + (f" with XLA_FLAGS=`{results['xla_flags_env']}`"
                                             if results["xla_flags_env"] else "") + ".",
      "Numbers are median (min–max) over interleaved rounds; ratios are computed round by round.",
      "", "## Goals", "", *goal_rows(results, measured),
      "", "## Training throughput", "",
      "GFLOP/s counts the matmuls only (3 · 2 · B · Σ d_in d_out per step); % of peak is taken"
      " against the peak matmul timed in the same round. s/epoch is 50000 images (remainder dropped).",
      "", *training,
      "", f"## Matmul peak (jitted f32 n×n @ n×n; peak = n = {peak['size']})", "",
      "| n | GFLOP/s |", "|---|---|",
      *[f"| {n} | {_fmt(v, 1)} |" for n, v in peak["per_size"].items()],
      "", "## XLA_FLAGS (each a fresh process, alternating with the default)", "",
      *flag_rows(results["xla_flags"]),
      "", "## IS-NLL evaluation time (k = 5000, `evaluation.evaluate`)", "",
      "| model | images timed | seconds | extrapolated to 10000 images |", "|---|---|---|---|",
      *[f"| {k} | {v['images']} | {_fmt(timing.summary(v['seconds']), 1)} |"
        f" {_fmt(timing.summary(v['extrapolated_s']), 0, ' s')} |" for k, v in results["is_nll"].items()],
      "", "## Compile time and memory", "",
      f"- cold compile of the first fused block ({results['default_run']['compile']['steps_per_scan']}"
      f" steps, default config, fresh process): trace+lower"
      f" {results['default_run']['compile']['trace_lower_s']:.2f} s + compile"
      f" {results['default_run']['compile']['compile_s']:.2f} s",
      f"- peak RSS {results['default_run']['peak_rss_gib']:.2f} GiB, wall"
      f" {results['default_run']['run_wall_s']:.0f} s: `{results['default_run']['run_command']}`",
      "", "## Vmapped seeds (`python benchmarks/seeds_benchmark.py --config=<the model's config>`)", ""]
  for model, text in (results.get("seeds") or {}).items():
    out += [f"{model}:", "", "```", text.strip(), "```", ""]
  return "\n".join(out)
