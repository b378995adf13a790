"""Sweeps: grids of dotted config overrides, point names, and aggregation over seeds.

A sweep is a list of *points*; a point is a dict of dotted config overrides,
{"model.activation": "elu", "seed": 1}. Config files declare theirs next to
`get_config` in a `get_sweep()` built from three helpers:

    product(sweep("model.activation", ["relu", "elu"]), sweep("seed", range(3)))
      -> 2 · 3 points (every combination, the last axis fastest)
    zip_sweeps(sweep("model.latent_dim", [2, 8]), sweep("training.batch_size", [32, 64]))
      -> 2 points (the i-th values together)
    chain(sweep_a, sweep_b) -> the points of sweep_a, then those of sweep_b

`experiments/sweep.py` runs each point in `<workdir>/<point_name(point)>`
(locally or on a Ray cluster), refuses a finished point whose config.json
differs from the point's config (`recorded_differences`), groups unfinished
seeds by `checkpoint_step` when it trains them together, and calls `aggregate`
on their `results.json`: points equal up to their seed form a group, and each
metric is reported as mean ± std over the group's seeds (the sample standard
deviation, ddof = 1; undefined for a single seed).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
import textwrap
from typing import Any, Iterable, Sequence

import ml_collections
import numpy as np

from vae_jax.run import metrics as metrics_lib

SEED_FIELD = "seed"
# Final test metrics aggregated by default (keys of results.json).
METRICS = ("neg_elbo", "nll", "recon", "kl", "skipped_updates", "train_wall_time_s")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]")


def sweep(field: str, values: Iterable) -> list[dict]:
  """One axis: [{field: v} for v in values]."""
  values = list(values)
  if not values:
    raise ValueError(f"sweep({field!r}, ...) has no values; give at least one.")
  return [{field: value} for value in values]


def _merged(parts) -> dict:
  point = {}
  for part in parts:
    _merge(point, part)
  return point


def product(*sweeps: Sequence[dict]) -> list[dict]:
  """Every combination of one point of each sweep (the last sweep varies fastest)."""
  return [_merged(combination) for combination in itertools.product(*sweeps)]


def zip_sweeps(*sweeps: Sequence[dict]) -> list[dict]:
  """The i-th points of all sweeps merged; the sweeps must have equal lengths."""
  lengths = {len(s) for s in sweeps}
  if len(lengths) > 1:
    raise ValueError(f"zip_sweeps needs sweeps of equal length, got lengths {sorted(lengths)}.")
  return [_merged(parts) for parts in zip(*sweeps)]


def chain(*sweeps: Sequence[dict]) -> list[dict]:
  """The points of every sweep, one sweep after the other."""
  return [dict(point) for s in sweeps for point in s]


def _merge(point: dict, part: dict) -> None:
  for field, value in part.items():
    if field in point:
      raise ValueError(f"field {field!r} is set by two axes of one point; sweep each field once.")
    point[field] = value


def _value_text(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    return "-".join(_value_text(v) for v in value) or "none"
  if isinstance(value, float):
    return repr(value)
  return str(value)


def point_name(point: dict) -> str:
  """A directory name from the overrides, e.g. "activation=elu,seed=1".

  Each field is named by its last dotted component unless two fields of the
  point share it; tuples are joined by "-" ("hidden_widths=512-256", "none"
  for ()); characters other than letters, digits and ._+=- become "_".
  """
  if not point:
    return "base"
  leaves = [field.rsplit(".", 1)[-1] for field in point]
  parts = []
  for (field, value), leaf in zip(point.items(), leaves):
    label = leaf if leaves.count(leaf) == 1 else field
    parts.append(_UNSAFE.sub("_", f"{label}={_value_text(value)}"))
  return ",".join(parts)


def check_names(points: Sequence[dict]) -> list[str]:
  """The points' names; ValueError if two points share one."""
  names = [point_name(p) for p in points]
  seen = {}
  for point, name in zip(points, names):
    if name in seen:
      raise ValueError(f"sweep points {seen[name]} and {point} have the same name {name!r};"
                       " remove the duplicate point.")
    seen[name] = point
  return names


def apply(config: ml_collections.ConfigDict, point: dict) -> ml_collections.ConfigDict:
  """A copy of `config` with the point's overrides (KeyError/TypeError for a bad field)."""
  config = ml_collections.ConfigDict(config.to_dict())  # a deep, unlocked copy
  config.lock()
  config.update_from_flattened_dict(point)
  return config


def flag_value(value: Any) -> str:
  """The value as `ml_collections.config_flags` parses it ("(512,256)", "(64,)", "0.5")."""
  if isinstance(value, (tuple, list)):
    items = ",".join(flag_value(v) for v in value)
    return f"({items},)" if len(value) == 1 else f"({items})"
  if isinstance(value, float):
    return repr(value)
  return str(value)


def override_flags(point: dict) -> list[str]:
  """Command-line flags of the point: ["--config.model.latent_dim=2", ...]."""
  return [f"--config.{field}={flag_value(value)}" for field, value in point.items()]


# -- workdirs ------------------------------------------------------------------

# Fields that may differ between a finished point and a relaunch: display and data location.
UNCOMPARED_FIELDS = ("training.progress_bar", "data.raw_data_dir", "data.data_dir")


def recorded_differences(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
  """Fields whose value in `<workdir>/config.json` differs from `config` (none if it has none)."""
  from vae_jax.run import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  if not os.path.exists(os.path.join(workdir, "config.json")):
    return []
  recorded = workdir_lib.flat_fields(json.loads(workdir_lib.load_config(workdir).to_json_best_effort()))
  expected = workdir_lib.flat_fields(json.loads(config.to_json_best_effort()))
  return [field for field in expected
          if field not in UNCOMPARED_FIELDS and recorded.get(field) != expected[field]]


def checkpoint_step(workdir: str) -> int:
  """The step of the newest checkpoint folder in `<workdir>/checkpoints` (0 if none)."""
  folder = os.path.join(workdir, "checkpoints")
  steps = [int(n) for n in os.listdir(folder) if n.isdigit()] if os.path.isdir(folder) else []
  return max(steps, default=0)


# -- aggregation ---------------------------------------------------------------


def load_results(workdir: str, points: Sequence[dict]) -> list[dict]:
  """[{"name", "point", "results" (results.json, or None if unfinished)}] per point."""
  records = []
  for point, name in zip(points, check_names(points)):
    path = os.path.join(workdir, name, "results.json")
    results = metrics_lib.read_results(path)
    records.append({"name": name, "point": dict(point), "results": results})
  return records


def aggregate(records: Sequence[dict], metrics: Sequence[str] = METRICS,
              over: str = SEED_FIELD) -> list[dict]:
  """Groups finished points equal up to `over` and averages their metrics.

  Returns, in order of first appearance, one row per group:
  {"point": overrides without `over`, "label": point_name of it, "num_seeds": n,
   "<metric>_mean": mean, "<metric>_std": sample std (ddof 1; None for n = 1),
   "<metric>_values": the n values} for each metric present in every result.
  """
  groups: dict[str, dict] = {}
  for record in records:
    if record["results"] is None:
      continue
    point = {k: v for k, v in record["point"].items() if k != over}
    label = point_name(point)
    group = groups.setdefault(label, {"point": point, "label": label, "results": []})
    group["results"].append(record["results"])
  rows = []
  for group in groups.values():
    row = {"point": group["point"], "label": group["label"], "num_seeds": len(group["results"])}
    for metric in metrics:
      values = [r.get(metric) for r in group["results"]]
      if any(not isinstance(v, (int, float)) for v in values):
        continue
      array = np.asarray(values, np.float64)
      row[f"{metric}_mean"] = float(array.mean())
      row[f"{metric}_std"] = float(array.std(ddof=1)) if array.size > 1 else None
      row[f"{metric}_values"] = [float(v) for v in array]
    rows.append(row)
  return rows


def _metrics_of(rows: Sequence[dict]) -> list[str]:
  return [m for m in METRICS if any(f"{m}_mean" in r for r in rows)] + sorted(
      {k[:-5] for r in rows for k in r if k.endswith("_mean")} - set(METRICS))


def swept_fields(rows: Sequence[dict]) -> list[str]:
  """Fields whose value differs between the rows, in order of appearance."""
  fields = []
  for row in rows:
    fields += [f for f in row["point"] if f not in fields]
  return [f for f in fields if len({repr(r["point"].get(f)) for r in rows}) > 1]


def _format(mean, std) -> str:
  if mean is None:
    return "–"
  return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def markdown_table(rows: Sequence[dict]) -> str:
  """A Markdown table: one row per group, "mean ± std" per metric."""
  fields, metrics = swept_fields(rows) or ["label"], _metrics_of(rows)
  lines = ["| " + " | ".join(fields + ["seeds"] + metrics) + " |",
           "|" + " --- |" * (len(fields) + 1 + len(metrics))]
  for row in rows:
    keys = [_value_text(row["point"].get(f, row["label"])) for f in fields]
    cells = [_format(row.get(f"{m}_mean"), row.get(f"{m}_std")) for m in metrics]
    lines.append("| " + " | ".join(keys + [str(row["num_seeds"])] + cells) + " |")
  return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[dict], path: str) -> None:
  """One line per group: the swept fields, num_seeds, <metric>_mean, <metric>_std."""
  fields, metrics = swept_fields(rows) or ["label"], _metrics_of(rows)
  columns = fields + ["num_seeds"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    for row in rows:
      keys = [_value_text(row["point"].get(f, row["label"])) for f in fields]
      values = [row.get(c) for c in columns[len(fields):]]
      writer.writerow(keys + ["" if v is None else v for v in values])


def write_json(rows: Sequence[dict], path: str, **header) -> None:
  """{"header": ..., "rows": rows} (NaN/inf written as strings)."""
  clean = lambda v: v if not isinstance(v, float) or math.isfinite(v) else str(v)  # noqa: E731
  rows = [{k: ([clean(x) for x in v] if isinstance(v, list) else clean(v)) for k, v in r.items()}
          for r in rows]
  with open(path, "w") as f:
    json.dump({"header": header, "rows": rows}, f, indent=1, default=list)


# -- plots -----------------------------------------------------------------------


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot(rows: Sequence[dict], path: str, metrics: Sequence[str] = ("neg_elbo", "nll"),
         title: str = "") -> None:
  """One PNG: each metric against the first swept field, and the rate–distortion plane.

  Error bars are the std over seeds. Numeric swept values are placed on their
  axis (logarithmic when they span a factor ≥ 8), others are categories; the
  remaining swept fields, if any, make one line each. The last panel plots
  rate = KL(q(z|x) ‖ p(z)) against distortion = −E_q[log p(x|z)] per group
  (the β-VAE trade-off; −ELBO = distortion + rate).
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fields = swept_fields(rows) or ["label"]
  metrics = [m for m in metrics if all(f"{m}_mean" in r for r in rows)]
  rate_distortion = rows and all("kl_mean" in r and "recon_mean" in r for r in rows)
  panels = len(metrics) + bool(rate_distortion)
  if not panels:
    return
  figure, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6), squeeze=False)
  x_field, series_fields = fields[0], fields[1:]
  value_of = lambda row, f: row["point"].get(f, row["label"])  # noqa: E731
  xs = [value_of(r, x_field) for r in rows]
  numeric = all(_is_number(x) for x in xs)
  categories = list(dict.fromkeys(_value_text(x) for x in xs))
  series = {}
  for row in rows:
    key = ", ".join(f"{f.rsplit('.', 1)[-1]}={_value_text(value_of(row, f))}" for f in series_fields)
    series.setdefault(key, []).append(row)
  std = lambda row, m: row.get(f"{m}_std") or 0.0  # noqa: E731
  for axis, metric in zip(axes[0], metrics):
    for label, members in series.items():
      position = [value_of(r, x_field) if numeric else categories.index(_value_text(value_of(r, x_field)))
                  for r in members]
      order = np.argsort(position, kind="stable")
      axis.errorbar(np.asarray(position, float)[order], [members[i][f"{metric}_mean"] for i in order],
                    yerr=[std(members[i], metric) for i in order], marker="o", capsize=3,
                    linestyle="-" if numeric else "none", label=label or None)
    if numeric and min(xs) > 0 and max(xs) / min(xs) >= 8:
      axis.set_xscale("log", base=2)
    if not numeric:
      axis.set_xticks(range(len(categories)), categories, rotation=45, ha="right")
    axis.set_xlabel(x_field)
    axis.set_ylabel(f"test {metric} (nats)")
    axis.grid(alpha=0.3)
    if series_fields:
      axis.legend(fontsize=7)
  if rate_distortion:
    axis = axes[0][-1]
    for row in rows:
      axis.errorbar(row["kl_mean"], -row["recon_mean"], xerr=std(row, "kl"), yerr=std(row, "recon"),
                    marker="o", capsize=2)
      text = ", ".join(_value_text(value_of(row, f)) for f in fields)
      axis.annotate(text, (row["kl_mean"], -row["recon_mean"]), fontsize=7,
                    textcoords="offset points", xytext=(3, 3))
    axis.set_xlabel("rate: KL(q(z|x) ‖ p(z)) (nats)")
    axis.set_ylabel("distortion: −E_q log p(x|z) (nats)")
    axis.grid(alpha=0.3)
  if title:
    figure.suptitle(textwrap.fill(title, 150), fontsize=8)
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, dpi=110)
  plt.close(figure)
