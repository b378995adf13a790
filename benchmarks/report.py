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
  for case, entry in results["training"].items():
    examples = entry["num_steps"] * entry["batch_size"]
    per_epoch = jax_steps.TRAIN_EXAMPLES // entry["batch_size"] * entry["batch_size"]
    fused = entry["seconds"][FUSED]
    measured[case] = {}
    for name, seconds in entry["seconds"].items():
      gflops = [entry["step_gflop"] * entry["num_steps"] / s for s in seconds]
      fraction = timing.summary([100 * g / p for g, p in zip(gflops, entry["peak_gflops"])])
      ratio = timing.pair_ratios(seconds, fused)          # t_this / t_fused = speed-up of fused
      measured[case][name] = {"ratio": ratio, "fraction": fraction}
      lines.append(
          f"| {case} | {name} | {_fmt(_rates(seconds, examples))}"
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


def _batch_gain(training: dict, small: str, large: str) -> float | None:
  """Median examples/s of the fused step of case `large` ÷ that of case `small`, round by round."""
  if small not in training or large not in training:
    return None
  rate = {c: [training[c]["num_steps"] * training[c]["batch_size"] / t for t in training[c]["seconds"][FUSED]]
          for c in (small, large)}
  return timing.pair_ratios(rate[large], rate[small])["median"]


def _fraction(work_gflop: float, seconds, peaks) -> float:
  """Median % of the matmul peak of `work_gflop` done in `seconds` (round by round)."""
  return statistics.median(100 * work_gflop / t / p for t, p in zip(seconds, peaks))


def speed_why(entry: dict, reference: str) -> str:
  """Why the fused step is under 2× `reference`: the bound the matmul peak sets, or our shortfall."""
  work = entry["step_gflop"] * entry["num_steps"]
  ours = _fraction(work, entry["seconds"][FUSED], entry["peak_gflops"])
  theirs = _fraction(work, entry["seconds"][reference], entry["peak_gflops"])
  bound = 100 / theirs
  if theirs > 100:
    return (f"not explained: {reference} measured at {theirs:.0f}% of the matmul peak timed beside"
            " it, so that peak was measured low (a noisy round); rerun on a quiet machine")
  if bound < 2:
    return (f"out of reach here: {reference} already does the step's matmuls at {theirs:.0f}% of"
            f" the matmul peak, so even at 100% the fused step would be {bound:.2f}× faster")
  return (f"vae_jax does the step's matmuls at {ours:.0f}% of the matmul peak and {reference} at"
          f" {theirs:.0f}%; 2× needs {2 * theirs:.0f}%: at the peak rate the matmuls would fill"
          f" {ours:.0f}% of the fused step's time, the other {100 - ours:.0f}% goes to matmuls below"
          " the peak rate and to work that is not matmuls (not broken down here)")


def is_nll_why(entry: dict, goal_s: float, peak_gflops: float) -> str:
  """Why the IS-NLL estimate misses `goal_s`: the bound the matmul peak sets, or our shortfall."""
  at_peak = entry["gflop_10000"] / peak_gflops
  seconds = statistics.median(entry["extrapolated_s"])
  if at_peak > goal_s:
    return (f"out of reach here: its {entry['gflop_10000']:.0f} GFLOP of matmuls take"
            f" {at_peak:.0f} s even at the matmul peak ({peak_gflops:.0f} GFLOP/s)")
  return (f"its matmuls run at {100 * at_peak / seconds:.0f}% of the matmul peak;"
          f" ≤ {goal_s:.0f} s needs ≥ {100 * at_peak / goal_s:.0f}%")


# IS-NLL goals (k = 5000, 10000 images, on 2 cores) per model: seconds, and the model it must cost about as.
IS_NLL_GOALS = {jax_steps.TWO_LAYERS: (180, jax_steps.CASES[0].name.split(",")[0])}
IS_NLL_DEFAULT_GOAL_S = 300
GOAL_CORES = 2


def goal_rows(results: dict, measured: dict) -> list[str]:
  """Each goal (issues 9 and 15) with the measured value, met / not met, and why where not met."""
  lines = ["| goal | measured | met? | why not |", "|---|---|---|---|"]

  def row(goal, value, ok, why=""):
    verdict = ok if isinstance(ok, str) else ("yes" if ok else "NO")
    lines.append(f"| {goal} | {value} | {verdict} | {'—' if ok is True else why} |")

  for case, by_impl in measured.items():
    eager = {k: v for k, v in by_impl.items() if k.startswith("torch eager")}
    if eager:
      best = min(eager, key=lambda k: eager[k]["ratio"]["median"])   # the fastest eager reference
      ratio = eager[best]["ratio"]["median"]
      row(f"fused step ≥ 2.0× PyTorch eager, {case}", f"{ratio:.2f}× vs {best} (its best threads)",
          ratio >= 2.0, speed_why(results["training"][case], best))
  default = jax_steps.CASES[2].name
  if default in measured:
    fraction = measured[default][FUSED]["fraction"]["median"]
    row(f"≥ 75% of the matmul peak, {default}", f"{fraction:.0f}%", fraction >= 75,
        f"the step's matmuls have {results['training'][default]['batch_size']} rows; the peak is"
        f" an n = {results['matmul_peak']['size']} square matmul")
  goal_model = jax_steps.CASES[0].name
  if "seeds" in results:
    speedup = _seeds_speedup((results.get("seeds") or {}).get(goal_model))
    gain = _batch_gain(results["training"], *(c.name for c in jax_steps.CASES[:2]))
    why = ("" if gain is None else
           f"one batch-20 step already keeps the cores busy: batch 100 trains only {gain:.2f}×"
           " faster per example, about the most that stacking 8 members into one step can gain")
    row(f"8 vmapped seeds ≥ 3× 8 sequential runs, {goal_model}",
        "not run" if speedup is None else f"{speedup:.2f}×", speedup is not None and speedup >= 3, why)
  nproc = results["machine"]["nproc"]
  for model, entry in results["is_nll"].items():
    goal_s, like = IS_NLL_GOALS.get(model, (IS_NLL_DEFAULT_GOAL_S, None))
    seconds = statistics.median(entry["extrapolated_s"])
    value = f"{seconds:.0f} s (extrapolated from {entry['images']} images, {nproc} cores)"
    if like in results["is_nll"]:
      other = results["is_nll"][like]
      value += (f"; {seconds / statistics.median(other['extrapolated_s']):.2f}× the time of {like}"
                f" for {entry['gflop_10000'] / other['gflop_10000']:.2f}× its matmul FLOPs")
    ok = f"not judged: {nproc} cores, the goal is for {GOAL_CORES}" if nproc > GOAL_CORES else seconds <= goal_s
    row(f"IS-NLL k=5000 on 10000 images ≤ {goal_s} s on {GOAL_CORES} cores, {model}", value, ok,
        is_nll_why(entry, goal_s, results["matmul_peak"]["gflops"]))
  if "default_run" in results:
    run = results["default_run"]
    row("first-step compile ≤ 10 s", f"{run['compile']['total_s']:.1f} s", run["compile"]["total_s"] <= 10,
        f"trace+lower {run['compile']['trace_lower_s']:.1f} s, XLA compile {run['compile']['compile_s']:.1f} s")
    row("default run peak memory ≤ 2 GiB", f"{run['peak_rss_gib']:.2f} GiB", run["peak_rss_gib"] <= 2,
        "peak RSS of the whole run; no breakdown measured")
  if "quality_per_hour" in results:
    quality = results["quality_per_hour"]
    if quality:
      final = quality["final"]
      value = (f"{final['nll']:.2f} ± {final['nll_stderr']:.2f} nats after"
               f" {final['train_wall_time_s'] / 60:.1f} min ({quality['machine_start']['date']},"
               " quality_per_hour.md)")
    row("86.76 nats within 1 CPU-hour (784-200-200-50, dynamic MNIST)",
        value if quality else "not run (`python -m benchmarks.quality_per_hour`, ≥ 1 h)",
        bool(quality and quality["met"]),
        f"{final['nll'] - 86.76:.2f} nats above the paper's value" if quality else "not run")
  return lines


def _is_nll_rows(results: dict) -> list[str]:
  peak = results["matmul_peak"]["gflops"]
  lines = ["| model | images timed | seconds | extrapolated to 10000 images | matmul GFLOP (10000 images)"
           " | % of peak |", "|---|---|---|---|---|---|"]
  for model, v in results["is_nll"].items():
    fraction = 100 * v["gflop_10000"] / peak / statistics.median(v["extrapolated_s"])
    lines.append(f"| {model} | {v['images']} | {_fmt(timing.summary(v['seconds']), 1)} |"
                 f" {_fmt(timing.summary(v['extrapolated_s']), 0, ' s')} | {v['gflop_10000']:.0f}"
                 f" | {fraction:.0f}% |")
  return lines


def _default_run_lines(run: dict) -> list[str]:
  return [
      "## Compile time and memory", "",
      f"- cold compile of the first fused block ({run['compile']['steps_per_scan']}"
      f" steps, default config, fresh process): trace+lower {run['compile']['trace_lower_s']:.2f} s"
      f" + compile {run['compile']['compile_s']:.2f} s",
      f"- peak RSS {run['peak_rss_gib']:.2f} GiB, wall {run['run_wall_s']:.0f} s: `{run['run_command']}`", ""]


def markdown(results: dict) -> str:
  """The whole report (sections that were not measured, e.g. under --only, are left out)."""
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
      "GFLOP/s counts the matmuls only (3 · 2 · B · (M_once + k · M_sample) per step: the"
      " multiply-adds of q(z₁|x) once per example, and of p(x|z₁), q(z₂|z₁) and p(z₁|z₂) once per"
      " latent sample); % of peak is taken against the peak matmul timed in the same round."
      " s/epoch is 50000 images (remainder dropped).",
      "", *training,
      "", f"## Matmul peak (jitted f32 n×n @ n×n; peak = n = {peak['size']})", "",
      "| n | GFLOP/s |", "|---|---|",
      *[f"| {n} | {_fmt(v, 1)} |" for n, v in peak["per_size"].items()], ""]
  if "xla_flags" in results:
    out += ["## XLA_FLAGS (each a fresh process, alternating with the default)", "",
            *flag_rows(results["xla_flags"]), ""]
  out += ["## IS-NLL evaluation time (k = 5000, `evaluation.evaluate`)", "", *_is_nll_rows(results), ""]
  if "default_run" in results:
    out += _default_run_lines(results["default_run"])
  if "seeds" in results:
    out += ["## Vmapped seeds (`python benchmarks/seeds_benchmark.py --config=<the model's config>`)", ""]
    for model, text in (results["seeds"] or {}).items():
      out += [f"{model}:", "", "```", text.strip(), "```", ""]
  return "\n".join(out)
