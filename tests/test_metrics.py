"""metrics.jsonl and results.json after kills and damage: nothing written earlier is lost (issue 18, class 6)."""
import json
import logging
import os

import pytest

from conftest import tiny_config
from vae_jax.run import metrics
from vae_jax.run import train
from vae_jax.scale import sweeps

RECORDS = [{"step": s, "split": "train", "loss": float(s)} for s in range(1, 29)]

# Lines a kill, a crashed file system or a hand edit can leave between records.
DAMAGE = {
    "blank": b"\n",
    "spaces": b"   \t\n",
    "cut_by_a_kill": b'{"step": 7, "spl\n',
    "nul_bytes": b"\x00\x00\x00\x00\n",
    "not_utf8": b'{"step": 8, "split": "train", "loss": "\xff"}\n',
    "two_records_glued": b'{"step": 9, "split": "train"}{"step": 10, "split": "train"}\n',
    "not_an_object": b"42\n",
    "no_step": b'{"split": "train", "loss": 1.0}\n',
    "bool_step": b'{"step": true, "split": "train"}\n',
    "unknown_split": b'{"step": 3, "split": "valid"}\n',
}


def _write(path, damage_at):
  """RECORDS with the given {index: line} inserted before record `index`."""
  with open(path, "wb") as f:
    for i, record in enumerate(RECORDS):
      if i in damage_at:
        f.write(damage_at[i])
      f.write(json.dumps(record).encode() + b"\n")


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_line_in_the_middle_drops_no_record(tmp_path, case, caplog):
  path = tmp_path / "metrics.jsonl"
  _write(path, {13: DAMAGE[case]})
  assert metrics.read_metrics(str(path)) == RECORDS
  damaged = case not in ("blank", "spaces")
  assert ("damaged line(s) (line 14)" in caplog.text) == damaged
  # The writer's rewrite on resume keeps every record and puts the damaged line aside.
  caplog.clear()
  metrics.MetricsWriter(str(tmp_path), resume_step=28, tensorboard=False).close()
  assert [json.loads(line) for line in open(path)] == RECORDS
  aside = tmp_path / "metrics.jsonl.damaged"
  assert (aside.read_bytes() if aside.exists() else None) == (DAMAGE[case] if damaged else None)
  assert ("moved to " + str(aside) in caplog.text) == damaged


def test_damaged_lines_are_appended_never_overwritten(tmp_path, caplog):
  path = tmp_path / "metrics.jsonl"
  _write(path, {0: DAMAGE["nul_bytes"], 27: DAMAGE["cut_by_a_kill"]})
  with path.open("ab") as f:
    f.write(b'{"step": 29, "split": "tr')   # torn last line, no newline
  metrics.MetricsWriter(str(tmp_path), resume_step=20, tensorboard=False).close()
  assert [json.loads(line) for line in open(path)] == RECORDS[:20]   # newer than the checkpoint: dropped
  _write(path, {5: DAMAGE["not_an_object"]})
  metrics.MetricsWriter(str(tmp_path), resume_step=28, tensorboard=False).close()
  assert (tmp_path / "metrics.jsonl.damaged").read_bytes() == (
      DAMAGE["nul_bytes"] + DAMAGE["cut_by_a_kill"] + b'{"step": 29, "split": "tr\n'
      + DAMAGE["not_an_object"])
  assert "3 damaged line(s) (line 1, 29, 31)" in caplog.text


def test_resume_after_a_blank_and_a_garbled_line_keeps_every_record(raw_data, tfds_data_dir, tmp_path,
                                                                     caplog):
  """The issue's case: a blank line in the middle of metrics.jsonl after a kill."""
  train.train_and_evaluate(tiny_config(raw_data, tfds_data_dir, training__num_epochs=1), str(tmp_path))
  os.remove(tmp_path / "results.json")
  lines = open(tmp_path / "metrics.jsonl", "rb").readlines()
  assert len(lines) == 18   # 16 train, 1 validation, 1 test
  lines[5:5] = [b"\n", b'{"step": 3, "spl\x00\x00\n']
  open(tmp_path / "metrics.jsonl", "wb").writelines(lines)
  caplog.set_level(logging.WARNING)
  train.train_and_evaluate(tiny_config(raw_data, tfds_data_dir), str(tmp_path))
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, 33))
  assert [r["step"] for r in records if r["split"] == "validation"] == [16, 32]
  assert (tmp_path / "metrics.jsonl.damaged").read_bytes() == b'{"step": 3, "spl\x00\x00\n'
  assert "metrics.jsonl: 1 damaged line(s) (line 7)" in caplog.text


@pytest.mark.parametrize("content", [b"", b"garbage", b'{"nll": 9', b"[1, 2]", b"null", b"\xff\xfe"])
def test_a_damaged_results_json_is_read_as_not_finished(tmp_path, content, caplog):
  path = tmp_path / "results.json"
  path.write_bytes(content)
  assert metrics.read_results(str(path)) is None
  assert path.read_bytes() == content   # readers never move or delete it
  assert f"{path} is damaged" in caplog.text and "\n" not in caplog.records[-1].getMessage()
  # A sweep counts the point as unfinished instead of failing with "Expecting value".
  point = tmp_path / "sweep" / "seed=0"
  point.mkdir(parents=True)
  (point / "results.json").write_bytes(content)
  assert sweeps.load_results(str(tmp_path / "sweep"), [{"seed": 0}])[0]["results"] is None
  assert metrics.read_results(str(tmp_path / "absent.json")) is None


def test_rerun_of_a_finished_run_with_a_garbage_results_json_evaluates_again(
    raw_data, tfds_data_dir, tmp_path, caplog):
  config = tiny_config(raw_data, tfds_data_dir, training__num_epochs=1)
  first = train.train_and_evaluate(config, str(tmp_path))
  (tmp_path / "results.json").write_text("Expecting value? no: garbage")
  caplog.set_level(logging.WARNING)
  again = train.train_and_evaluate(config, str(tmp_path))
  for name in ("neg_elbo", "nll", "recon", "kl", "step"):
    assert again[name] == first[name], name
  assert json.load(open(tmp_path / "results.json")) == again
  aside, = tmp_path.glob("results.json.damaged-*")
  assert aside.read_text() == "Expecting value? no: garbage"   # kept, never deleted
  assert "is damaged (not JSON" in caplog.text and str(aside) in caplog.text
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["split"] for r in records].count("test") == 1
