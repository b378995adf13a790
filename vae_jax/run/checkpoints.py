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

A non-finite state is never written (`save` raises), and a checkpoint holding
NaN/inf (written by an older version) is treated as corrupt on restore.

Any workdir path works: orbax finds the files of a checkpoint with `glob`, so
a path holding `[`, `*`, `?`, a backslash or a `scheme:` part would make it
write checkpoints it can never read back (or read another folder's); such a
checkpoints folder is handed to orbax through a plain alias of the same folder
(`/proc/self/fd/<n>/checkpoints`), and where the system has none it is refused
before anything is written (`check_path`).

A store opened with `read_only=True` (evaluation, figures, applications) never
deletes, moves or creates anything: a training process may own the workdir.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import threading
import time
from typing import Any

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint could not be written, or was written by a different model."""


# Paths orbax, etils' glob and tensorstore all take literally (letters and digits
# of any script, and these signs); any other path goes through an alias.
_PLAIN_PATH = re.compile(r"[\w ./+=,@%~#-]*")
_ALIAS_ROOT = "/proc/self/fd"


def check_path(workdir: str) -> None:
  """Raises CheckpointError if orbax cannot keep checkpoints under `workdir` on this system."""
  path = os.path.abspath(os.fspath(workdir))
  if not _PLAIN_PATH.fullmatch(path) and not os.path.isdir(_ALIAS_ROOT):
    odd = sorted(set(re.sub(r"[\w ./+=,@%~#-]", "", path)))
    raise CheckpointError(
        f"workdir {workdir} holds {''.join(odd)!r}, which orbax reads as a pattern on this"
        " system; choose a --workdir of letters, digits, spaces and ./+=,@%~#- only.")


def host_arrays(state: Any) -> list[tuple[str, np.ndarray]]:
  """(tree path, numpy array) of every leaf, in tree order."""
  return [(jax.tree_util.keystr(path), np.asarray(leaf))
          for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]]


def state_digest(state: Any, arrays: list | None = None) -> str:
  """SHA-256 over the dtype, shape and bytes of every leaf, in tree order."""
  digest = hashlib.sha256()
  for _, array in arrays or host_arrays(state):
    digest.update(f"{array.dtype}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()


def first_non_finite(arrays: list[tuple[str, np.ndarray]]) -> str | None:
  """The tree path of the first floating-point leaf holding NaN or ±inf, or None."""
  for name, array in arrays:
    if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
      return name
  return None


def leaf_shapes(state: Any) -> dict[str, str]:
  """{tree path: "dtype[shape]"} of every leaf (what `meta` records)."""
  return {jax.tree_util.keystr(path): f"{np.dtype(leaf.dtype).name}{list(np.shape(leaf))}"
          for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}


def abstract_like(state: Any) -> Any:
  """Shapes, dtypes and shardings of `state`, the target that restoring must match."""
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=getattr(x, "sharding", None)),
      state)


@contextlib.contextmanager
def _absl_quiet():
  """Hides absl warnings (orbax warns that a read-only manager is read-only)."""
  level = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(level)


@contextlib.contextmanager
def _signals_deferred():
  """Holds SIGINT/SIGTERM back until the block is done, then delivers them.

  orbax's `wait_until_finished` catches BaseException, so a Ctrl-C raised in
  it would be swallowed (and the run go on); a checkpoint is finished first.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  pending = []
  signums = (signal.SIGINT, signal.SIGTERM)
  handlers = {s: signal.signal(s, lambda signum, _: pending.append(signum)) for s in signums}
  try:
    yield
  finally:
    for signum, handler in handlers.items():
      signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    for signum in dict.fromkeys(pending):
      signal.raise_signal(signum)


class CheckpointStore:
  """The checkpoints of one run, under `<workdir>/checkpoints/<step>/`."""

  def __init__(self, workdir: str, keep: int = 3, keep_period: int | None = None, *,
               read_only: bool = False):
    """`keep` newest checkpoints, and every one whose step is a multiple of `keep_period`.

    Args:
      workdir: the run's folder.
      keep: newest checkpoints kept (writers only).
      keep_period: also keep every checkpoint whose step is a multiple of it.
      read_only: a reader: it saves, deletes, moves and creates nothing (and so
        leaves a training process's unfinished checkpoints alone).
    """
    self.workdir = os.fspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    self.read_only = read_only
    check_path(self.workdir)
    self._alias_fd, path = None, os.path.abspath(self.directory)
    if not _PLAIN_PATH.fullmatch(path) and (os.path.isdir(self.workdir) or not read_only):
      os.makedirs(self.workdir, exist_ok=True)
      self._alias_fd = os.open(self.workdir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
      path = f"{_ALIAS_ROOT}/{self._alias_fd}/checkpoints"
    self._alias = path
    if read_only:
      options = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0,
                                             max_to_keep=None, create=False)
    else:
      policies = ocp.checkpoint_managers
      keeping = (dict(preservation_policy=policies.AnyPreservationPolicy(
          [policies.LatestN(n=keep), policies.EveryNSteps(interval_steps=keep_period)]))
                 if keep_period else dict(max_to_keep=keep))
      options = ocp.CheckpointManagerOptions(**keeping, enable_async_checkpointing=False,
                                             cleanup_tmp_directories=True, create=True)
    with _absl_quiet():
      self._manager = ocp.CheckpointManager(path, options=options, item_names=("state", "meta"))

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()

  def _real(self, text: str) -> str:
    """`text` with the alias of the checkpoints folder replaced by its real path."""
    return str(text).replace(self._alias, self.directory)

  def steps(self) -> list[int]:
    """Steps of the complete checkpoints, ascending."""
    return sorted(self._manager.all_steps())

  def save(self, state: Any, extra: dict | None = None) -> int:
    """Writes `state` at its step (a no-op if that step is already saved).

    Raises:
      CheckpointError: the write failed, or `state` holds NaN/inf (never written).
    """
    if self.read_only:
      raise CheckpointError(f"{self.directory} was opened read-only; nothing can be saved there.")
    step = int(state.step)
    if step in self._manager.all_steps():
      return step
    arrays = host_arrays(state)
    bad = first_non_finite(arrays)
    if bad is not None:
      good = self.steps()
      raise CheckpointError(
          f"refusing to checkpoint step {step}: state{bad} holds NaN/inf (the last good"
          f" checkpoint is step {good[-1] if good else 'none'} in {self.directory}, kept);"
          " lower the learning rate or clip gradients (optimizer.grad_clip_norm).")
    meta = {"step": step, "digest": state_digest(state, arrays), "shapes": leaf_shapes(state),
            "time": time.time(), **(extra or {})}
    try:
      with _signals_deferred():
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      good = self.steps()
      raise CheckpointError(
          f"could not write the checkpoint of step {step} to {self.directory}"
          f" ({type(e).__name__}: {self._real(e)}); free disk space or fix permissions and rerun"
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
        path = os.path.join(self.directory, str(step))
        if self.read_only:   # perhaps being written or deleted by its training process
          logging.warning("checkpoint %s is unreadable (%s: %s); using the previous one.",
                          path, type(e).__name__, self._real(e))
          print(f"WARNING: checkpoint of step {step} is unreadable ({type(e).__name__});"
                " left in place; using the previous checkpoint.", flush=True)
          continue
        moved = self._quarantine(step)
        logging.warning("checkpoint %s is corrupt or unreadable (%s: %s); moved it to %s"
                        " and falling back to the previous one.",
                        path, type(e).__name__, self._real(e), moved)
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
    arrays = host_arrays(state)
    if state_digest(state, arrays) != meta["digest"]:
      raise ValueError("the arrays do not match the digest written with them")
    bad = first_non_finite(arrays)
    if bad is not None:   # written before non-finite states were refused
      raise ValueError(f"state{bad} holds NaN/inf")
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
    """Waits for orbax's writes and threads (so none outlives the interpreter), frees the alias."""
    try:
      self._manager.close()
    finally:
      if self._alias_fd is not None:
        os.close(self._alias_fd)
        self._alias_fd = None
