"""Metrics of a run: a JSONL file (one record per line), TensorBoard events, results.json.

Each record is {"step": int, "split": "train"|"validation"|"test", ...}. On
resume, records newer than the restored checkpoint, and "test" records (written
after the last checkpoint, before results.json), are dropped first (by
rewriting the file atomically), so that the file has neither gaps nor
duplicates whatever moment the previous process was killed at.

Damaged lines (cut by a kill, garbled by a crash of the file system, edited by
hand) never hide the records around them: readers skip them with a warning,
and the writer's rewrite appends them to `metrics.jsonl.damaged` (never
truncated) before it drops them from `metrics.jsonl`. A damaged `results.json`
means "not finished": `read_results` warns and returns None, and the training
loop moves it aside to `results.json.damaged-<ms>` before evaluating again.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Iterable

from absl import logging

SPLITS = ("train", "validation", "test")
DAMAGED_SUFFIX = ".damaged"


def _record(line: bytes) -> dict | None:
  """The record of one line, or None if the line is not one."""
  try:
    record = json.loads(line.decode("utf-8"))
  except ValueError:  # JSONDecodeError and UnicodeDecodeError
    return None
  if not isinstance(record, dict) or record.get("split") not in SPLITS:
    return None
  step = record.get("step")  # an int (a float such as 16.0 in files written before 2026-12)
  if isinstance(step, bool) or not isinstance(step, (int, float)) or not float(step).is_integer():
    return None
  return record


def parse_metrics(path: str) -> tuple[list[dict], list[tuple[int, bytes]]]:
  """(records, damaged lines as (line number, bytes)) of a metrics file; blank lines are neither."""
  if not os.path.exists(path):
    return [], []
  records, damaged = [], []
  with open(path, "rb") as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      record = _record(line)
      if record is None:
        damaged.append((number, line))
      else:
        records.append(record)
  return records, damaged


def _describe(path: str, damaged) -> str:
  numbers = [n for n, _ in damaged]
  shown = ", ".join(map(str, numbers[:10])) + (", ..." if len(numbers) > 10 else "")
  return f"{path}: {len(numbers)} damaged line(s) (line {shown}) are not records"


def read_metrics(path: str) -> list[dict]:
  """Every record of a metrics file, in order; damaged lines are skipped with a warning."""
  records, damaged = parse_metrics(path)
  if damaged:
    logging.warning("%s; skipped, the other %d records are read", _describe(path, damaged),
                    len(records))
  return records


def read_results(path: str, *, move_damaged: bool = False) -> dict | None:
  """The final metrics of a run (`results.json`), or None if the run is not finished.

  Args:
    path: the run's results.json.
    move_damaged: rename a damaged file to `<path>.damaged-<ms>` (only the
      process that will write a new one does this; readers never move files).

  Returns:
    The dict, or None when the file is absent or damaged (not JSON, not an
    object); a damaged file is reported with a warning and never deleted.
  """
  try:
    with open(path, "rb") as f:
      results = json.loads(f.read().decode("utf-8"))
  except FileNotFoundError:
    return None
  except ValueError as e:
    results = e
  if isinstance(results, dict):
    return results
  problem = f"not JSON ({results})" if isinstance(results, Exception) else "not a JSON object"
  if move_damaged:
    aside = f"{path}{DAMAGED_SUFFIX}-{int(time.time() * 1000)}"
    os.replace(path, aside)
    logging.warning("%s is damaged (%s); moved to %s, the run is evaluated again", path, problem, aside)
  else:
    logging.warning("%s is damaged (%s); the run counts as not finished (rerun its training"
                    " to evaluate it again)", path, problem)
  return None


def _clean(value):
  value = float(value)
  return value if math.isfinite(value) else str(value)


class MetricsWriter:
  """Appends records to `<workdir>/metrics.jsonl`, TensorBoard event files and `trackers`.

  `trackers` (`vae_jax.run.trackers`: W&B, MLflow) get every record as
  `log(step, split, scalars)` and are closed with the writer.
  """

  def __init__(self, workdir: str, resume_step: int, tensorboard: bool = True, trackers=()):
    self.path = os.path.join(workdir, "metrics.jsonl")
    records, damaged = parse_metrics(self.path)
    if damaged:  # Kept aside (appended, made durable) before the rewrite drops them.
      with open(self.path + DAMAGED_SUFFIX, "ab") as f:
        f.writelines(line if line.endswith(b"\n") else line + b"\n" for _, line in damaged)
        f.flush()
        os.fsync(f.fileno())
      logging.warning("%s; moved to %s, every other record is kept",
                      _describe(self.path, damaged), self.path + DAMAGED_SUFFIX)
    kept = [r for r in records if r["step"] <= resume_step and r["split"] != "test"]
    tmp = self.path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r) + "\n" for r in kept)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, self.path)
    self._file = open(self.path, "a", encoding="utf-8")
    self._summary = None
    self._trackers = list(trackers)
    if tensorboard:
      from flax.metrics import tensorboard as flax_tensorboard  # pylint: disable=g-import-not-at-top
      self._summary = flax_tensorboard.SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, split: str, scalars: dict) -> None:
    # results' own "step" (a float once cleaned) never replaces the record's int step.
    record = {"step": int(step), "split": split,
              **{k: _clean(v) for k, v in scalars.items() if k not in ("step", "split")}}
    self._file.write(json.dumps(record) + "\n")
    if self._summary is not None:
      for name, value in scalars.items():
        self._summary.scalar(f"{split}/{name}", float(value), int(step))
    for tracker in self._trackers:
      tracker.log(step, split, scalars)

  def write_many(self, split: str, records: Iterable[tuple[int, dict]]) -> None:
    for step, scalars in records:
      self.write(step, split, scalars)

  def flush(self) -> None:
    """Makes every record so far durable (called before each checkpoint)."""
    self._file.flush()
    os.fsync(self._file.fileno())
    if self._summary is not None:
      self._summary.flush()

  def close(self) -> None:
    self.flush()
    self._file.close()
    if self._summary is not None:
      self._summary.close()
    for tracker in self._trackers:
      tracker.close()


class NullWriter:
  """A `MetricsWriter` that writes nothing (processes other than 0 of a multi-host run)."""

  def write(self, step: int, split: str, scalars: dict) -> None:
    del step, split, scalars

  def write_many(self, split: str, records: Iterable[tuple[int, dict]]) -> None:
    del split, records

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass
