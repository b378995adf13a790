"""Test-only fault injection: SIGKILL this process at a chosen file operation.

`tests/test_reliability.py` puts this folder on PYTHONPATH of the training
subprocess; Python imports `sitecustomize` at start-up. Nothing in vae_jax
knows about it. The operations watched are the ones that finalise something
on disk: os.rename / os.replace (orbax renaming a checkpoint's tmp folder,
config.json, metrics.jsonl, results.json), os.fsync (metrics made durable)
and shutil.rmtree (orbax deleting old checkpoints). Each call has two points,
just before it and just after it, numbered 1, 2, 3, ... in call order.

A point is described as "<before|after> <op> <path>" (for fsync the path of
the file descriptor).

  VAE_JAX_KILL_AT=<pattern>  SIGKILL the process (no cleanup runs) at the first
                             point whose description matches the fnmatch
                             pattern, e.g. "after rename */checkpoints/4.orbax-checkpoint-tmp".
  VAE_JAX_KILL_GROUP=1       kill the whole process group instead (a sweep
                             launcher started in its own session, with its
                             training processes: a machine that goes down).
  VAE_JAX_FAIL_AT=<pattern>  instead raise OSError(ENOSPC) there: a full disk.
  VAE_JAX_SIGNAL_AT=<pattern> instead send the process VAE_JAX_SIGNAL (INT or
                             TERM; default INT) there: Ctrl-C or a polite kill.
  VAE_JAX_KILL_LOG=<file>    append "<n> <description>" for every point, and
                             "KILL <n> <description>" for the point killed at.
"""

import errno
import fnmatch
import functools
import os
import shutil
import signal

_KILL_AT = os.environ.get("VAE_JAX_KILL_AT", "")
_FAIL_AT = os.environ.get("VAE_JAX_FAIL_AT", "")
_SIGNAL_AT = os.environ.get("VAE_JAX_SIGNAL_AT", "")
_signalled = [False]
_LOG = os.environ.get("VAE_JAX_KILL_LOG")
_count = [0]


def _point(when, op, path):
  _count[0] += 1
  description = f"{when} {op} {path}"
  kill = bool(_KILL_AT) and fnmatch.fnmatchcase(description, _KILL_AT)
  line = f"{_count[0]} {description}"
  if _LOG:
    with open(_LOG, "a") as f:
      f.write(("KILL " if kill else "") + line + "\n")
  if kill and os.environ.get("VAE_JAX_KILL_GROUP"):
    os.killpg(os.getpgid(0), signal.SIGKILL)
  if kill:
    os.kill(os.getpid(), signal.SIGKILL)
  if _SIGNAL_AT and not _signalled[0] and fnmatch.fnmatchcase(description, _SIGNAL_AT):
    _signalled[0] = True
    os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get("VAE_JAX_SIGNAL", "INT")))
  if _FAIL_AT and fnmatch.fnmatchcase(description, _FAIL_AT):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def _watch(module, name):
  original = getattr(module, name)

  @functools.wraps(original)
  def watched(*args, **kwargs):
    path = args[0] if args else ""
    if isinstance(path, int):  # os.fsync(fd)
      path = os.readlink(f"/proc/self/fd/{path}")
    _point("before", name, path)
    result = original(*args, **kwargs)
    _point("after", name, path)
    return result

  setattr(module, name, watched)


if _KILL_AT or _FAIL_AT or _SIGNAL_AT or _LOG:
  for _module, _name in ((os, "rename"), (os, "replace"), (os, "fsync"), (shutil, "rmtree")):
    _watch(_module, _name)
