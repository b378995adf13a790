"""Metrics of a run: a JSONL file (one record per line) and TensorBoard events.

Each record is {"step": int, "split": "train"|"validation"|"test", ...}. On
resume, records newer than the restored checkpoint, and "test" records (written
after the last checkpoint, before results.json), are dropped first (by
rewriting the file atomically), so that the file has neither gaps nor
duplicates whatever moment the previous process was killed at.
"""

from __future__ import annotations

import json
import math
import os
from typing import Iterable


def read_metrics(path: str) -> list[dict]:
  """All complete records of a metrics file (a torn last line is ignored)."""
  if not os.path.exists(path):
    return []
  records = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        break   # a line cut by a kill can only be the last one
  return records


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
    kept = [r for r in read_metrics(self.path)
            if r["step"] <= resume_step and r["split"] != "test"]
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
    record = {"step": int(step), "split": split, **{k: _clean(v) for k, v in scalars.items()}}
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
