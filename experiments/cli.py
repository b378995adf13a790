"""Shared command-line behaviour: user errors become one line and exit code 1."""

import contextlib
import os
import sys

from absl import app
from absl import logging

# TensorFlow (used by TFDS to prepare data) logs every op placement otherwise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# Errors that mean "the input is wrong" rather than "the program is wrong".
def _user_error_types():
  from vae_jax import checkpoints, data, train  # pylint: disable=g-import-not-at-top
  return (ValueError, KeyError, TypeError, FileNotFoundError, PermissionError, data.DataError,
          checkpoints.CheckpointError, train.TrainingDiverged, train.WorkdirError)


@contextlib.contextmanager
def one_line_errors():
  """Prints `error: <message>` on stderr and exits 1 for user errors."""
  try:
    yield
  except _user_error_types() as e:
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def run(main):
  """absl's app.run, with flag parsing errors (e.g. config typos) kept to one line too."""
  def quiet_main(argv):
    # orbax logs every checkpoint at INFO; show warnings unless -v/--verbosity is given.
    if not any(a.startswith(("-v", "--v")) for a in sys.argv[1:]):
      logging.set_verbosity(logging.WARNING)
    return main(argv)

  with one_line_errors():
    app.run(quiet_main)
