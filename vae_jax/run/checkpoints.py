"""Orbax checkpoints that are verified on restore and never silently lost.

Each checkpoint holds two items: `state` (the `TrainState` pytree, written by
orbax atomically: a temporary folder renamed when complete, so a process
killed mid-write leaves no half checkpoint behind) and `meta` (JSON with the
step, the shape and dtype of every leaf, and a SHA-256 digest of every array of
the state). On restore `meta` is read first: a checkpoint whose shapes differ
from this run's state was written by another model, and restoring stops with a
`CheckpointError` (the checkpoint is left as it is). Then the digest is
recomputed: a checkpoint that fails to load or whose bytes changed is moved
aside to `<workdir>/corrupt_checkpoints/` (never deleted), a warning names it,
and the previous checkpoint is tried. Nothing is unpickled: orbax reads arrays
and JSON only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from typing import Any

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint could not be written, or was written by a different model."""


def state_digest(state: Any) -> str:
  """SHA-256 over the dtype, shape and bytes of every leaf, in tree order."""
  digest = hashlib.sha256()
  for leaf in jax.tree_util.tree_leaves(state):
    array = np.asarray(leaf)
    digest.update(f"{array.dtype}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()


def leaf_shapes(state: Any) -> dict[str, str]:
  """{tree path: "dtype[shape]"} of every leaf (what `meta` records)."""
  return {jax.tree_util.keystr(path): f"{np.dtype(leaf.dtype).name}{list(np.shape(leaf))}"
          for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}


def abstract_like(state: Any) -> Any:
  """Shapes, dtypes and shardings of `state`, the target that restoring must match."""
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=getattr(x, "sharding", None)),
      state)


class CheckpointStore:
  """The checkpoints of one run, under `<workdir>/checkpoints/<step>/`."""

  def __init__(self, workdir: str, keep: int = 3, keep_period: int | None = None):
    """`keep` newest checkpoints, and every one whose step is a multiple of `keep_period`."""
    self.workdir = os.fspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    policies = ocp.checkpoint_managers
    keeping = (dict(preservation_policy=policies.AnyPreservationPolicy(
        [policies.LatestN(n=keep), policies.EveryNSteps(interval_steps=keep_period)]))
               if keep_period else dict(max_to_keep=keep))
    self._manager = ocp.CheckpointManager(
        os.path.abspath(self.directory),
        options=ocp.CheckpointManagerOptions(
            **keeping, enable_async_checkpointing=False,
            cleanup_tmp_directories=True, create=True),
        item_names=("state", "meta"))

  def steps(self) -> list[int]:
    """Steps of the complete checkpoints, ascending."""
    return sorted(self._manager.all_steps())

  def save(self, state: Any, extra: dict | None = None) -> int:
    """Writes `state` at its step (a no-op if that step is already saved)."""
    step = int(state.step)
    if step in self._manager.all_steps():
      return step
    meta = {"step": step, "digest": state_digest(state), "shapes": leaf_shapes(state),
            "time": time.time(), **(extra or {})}
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      good = self.steps()
      raise CheckpointError(
          f"could not write the checkpoint of step {step} to {self.directory}"
          f" ({type(e).__name__}: {e}); free disk space or fix permissions and rerun"
          f" the same command, it resumes from step {good[-1] if good else 0}.") from e
    return step

  def restore_latest(self, target: Any) -> tuple[Any, dict] | tuple[None, None]:
    """The newest checkpoint that loads and verifies, or (None, None) if none exists.

    Args:
      target: a state of the expected structure (its arrays give shapes/dtypes).

    Raises:
      CheckpointError: the newest readable checkpoint holds a different model.
    """
    for step in reversed(self.steps()):
      try:
        return self.restore(step, target)
      except CheckpointError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        moved = self._quarantine(step)
        logging.warning("checkpoint %s is corrupt or unreadable (%s: %s); moved it to %s"
                        " and falling back to the previous one.",
                        os.path.join(self.directory, str(step)), type(e).__name__, e, moved)
        print(f"WARNING: checkpoint of step {step} is corrupt ({type(e).__name__});"
              f" moved to {moved}; falling back to the previous checkpoint.", flush=True)
    return None, None

  def restore(self, step: int, target: Any) -> tuple[Any, dict]:
    """The checkpoint of `step`, verified against its digest and `target`'s shapes.

    Raises:
      CheckpointError: it holds a different model.
      Exception: it is unreadable or corrupt (`restore_latest` moves it aside).
    """
    meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    self._check_same_model(step, meta, target)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_like(target)), meta=ocp.args.JsonRestore()))
    state = restored.state
    if state_digest(state) != meta["digest"]:
      raise ValueError("the arrays do not match the digest written with them")
    if jax.tree_util.tree_structure(state) != jax.tree_util.tree_structure(target):
      raise ValueError("the state's structure differs from this run's")
    return type(target)(*state) if isinstance(target, tuple) else state, meta

  def _check_same_model(self, step: int, meta: dict, target: Any) -> None:
    """Raises CheckpointError if `meta` records other leaf shapes than `target`'s."""
    if not isinstance(meta, dict) or not isinstance(meta.get("shapes"), dict):
      return  # no record of the shapes (an older checkpoint): the restore checks them
    ours = leaf_shapes(target)
    if meta["shapes"] == ours:
      return
    differ = sorted(set(ours) ^ set(meta["shapes"])) or sorted(
        k for k in ours if ours[k] != meta["shapes"][k])
    name = differ[0]
    raise CheckpointError(
        f"checkpoint {os.path.join(self.directory, str(step))} was written by a different"
        f" model ({name}: {meta['shapes'].get(name, 'absent')} there, {ours.get(name, 'absent')}"
        " here); use a new --workdir, or the config of the run that wrote it.")

  def _quarantine(self, step: int) -> str:
    aside = os.path.join(self.workdir, "corrupt_checkpoints")
    os.makedirs(aside, exist_ok=True)
    destination = os.path.join(aside, f"{step}-{int(time.time() * 1000)}")
    shutil.move(os.path.join(self.directory, str(step)), destination)
    self._manager.reload()
    return destination

  def close(self):
    self._manager.close()
