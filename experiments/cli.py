"""Shared command-line behaviour: every exit path ends in one line.

Entry points call `run(main)` (flag and config errors: one line) and wrap their
work in `one_line_errors()` (errors of the input, the data, the workdir or the
disk: one line). Both print `error: <what is wrong>; <how to fix it>` on
stderr and exit with status 1; anything else is a bug and keeps its traceback.
A flag given twice is refused (absl would keep the last value, and
ml_collections joins tuples: `hidden_widths=(16,)` then `=(8,)` gave (16, 8)).
Ctrl-C (SIGINT) and SIGTERM unwind the program (checkpoints closed, the
workdir's lock released), print one line and exit with 128 + the signal
number (130, 143); a second signal exits at once.
"""

import contextlib
import errno
import os
import re
import signal
import sys

from absl import app
from absl import flags
from absl import logging

# TensorFlow (used by TFDS to prepare data) logs every op placement otherwise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


# Errors that mean "the input is wrong" rather than "the program is wrong".
def _user_error_types():
  from vae_jax.run import checkpoints  # pylint: disable=g-import-not-at-top
  from vae_jax.datasets import data  # pylint: disable=g-import-not-at-top
  from vae_jax.run import train  # pylint: disable=g-import-not-at-top
  from vae_jax.run import workdir  # pylint: disable=g-import-not-at-top
  return (ValueError, KeyError, TypeError, OSError, data.DataError,
          checkpoints.CheckpointError, train.TrainingDiverged, workdir.WorkdirError)


class Interrupted(KeyboardInterrupt):
  """SIGINT or SIGTERM arrived; raised in the main thread so that cleanup runs."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum


def _interrupt(signum, frame):
  del frame
  for other in (signal.SIGINT, signal.SIGTERM):
    signal.signal(other, _exit_now)
  raise Interrupted(signum)


def _exit_now(signum, frame):
  del frame
  print(f"error: interrupted again by {signal.Signals(signum).name}; exited at once.",
        file=sys.stderr, flush=True)
  os._exit(128 + signum)  # pylint: disable=protected-access


def _fail(message: str):
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(1)


def _message(e: BaseException) -> str:
  """The first line of `e`; for a full disk or a denied write, what to do about it."""
  if isinstance(e, OSError) and e.errno in _DISK_ERRNOS and e.filename:
    return (f"{e.strerror}: {e.filename}; free disk space or fix permissions, then rerun"
            " the same command.")
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__


def _cause(e: BaseException) -> str:
  """The last line of a message that embeds a traceback or a list of attempts."""
  lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
  cause = re.sub(r"^\w+(Error|Exception): ", "", lines[-1]) if lines else type(e).__name__
  return cause.rstrip(".")


@contextlib.contextmanager
def one_line_errors():
  """Prints `error: <message>` on stderr and exits 1 for user errors."""
  try:
    yield
  except _user_error_types() as e:
    _fail(_message(e))


def _unknown_field(e: Exception, argv) -> str:
  """ml_collections' "'latent_dm'\\nDid you mean ..." for a misspelt --config.<field>."""
  text = str(e).replace("\\n", "\n").replace("\\'", "'")
  suggestion = re.search(r'Did you mean "(\w+)" instead of "(\w+)"', text)
  name = suggestion.group(2) if suggestion else (re.findall(r"'(\w+)'", text) or ["?"])[0]
  given = [a.split("=")[0] for a in argv if a.startswith("--") and f".{name}" in a.split("=")[0]]
  where = f" ({given[0]})" if given else ""
  fix = (f"did you mean {suggestion.group(1)!r}?" if suggestion
         else "see vae_jax/config.py for every field")
  return f"unknown config field {name!r}{where}; {fix}"


def _repeated_flag(argv) -> str | None:
  """`--name=...` given twice (config fields and single-valued flags), as an error message."""
  seen = {}
  for arg in argv[1:]:
    if arg == "--":
      break
    if not re.match(r"--?[A-Za-z_]", arg):
      continue
    name = arg.lstrip("-").split("=", 1)[0]
    if name == "flagfile" or (name in flags.FLAGS and isinstance(flags.FLAGS[name], flags.MultiFlag)):
      continue
    if name.startswith("no") and name[2:] in flags.FLAGS:
      name = name[2:]
    if name in seen:
      return (f"--{name} is given twice ({seen[name]} and {arg}); give it once, with the value"
              " you mean")
    seen[name] = arg
  return None


def _parse_flags(argv):
  """absl's flag parsing, with every error as one line, and config files loaded now."""
  repeated = _repeated_flag(argv)
  if repeated:
    _fail(repeated)
  try:
    remaining = flags.FLAGS(argv)
  except SystemExit as e:  # absl exits 1 after printing --help; asking for help is no error
    sys.exit(0 if any(a.lstrip("-") in ("help", "helpfull", "helpshort", "h", "?") for a in argv[1:])
             else e.code)
  except (AttributeError, KeyError) as e:  # --config.<field> that the config does not have
    _fail(_unknown_field(e, argv))
  except flags.Error as e:
    _fail(f"{_cause(e)}; see --helpfull for the flags")
  except (TypeError, ValueError) as e:
    _fail(_cause(e))
  for name in list(flags.FLAGS):
    try:  # ml_collections defers a config file's load error to the first attribute access
      getattr(flags.FLAGS[name].value, "lock", None)
    except OSError as e:
      _fail(f"cannot load --{name} ({_cause(e)}); give the path of a config file,"
            " e.g. experiments/configs/default.py")
  return remaining


def run(main):
  """absl's app.run, with flag parsing errors (e.g. config typos) kept to one line too."""
  def quiet_main(argv):
    # orbax logs every checkpoint at INFO; show warnings unless -v/--verbosity is given.
    if not any(a.startswith(("-v", "--v")) for a in sys.argv[1:]):
      logging.set_verbosity(logging.WARNING)
    return main(argv)

  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, _interrupt)
  try:
    with one_line_errors():
      app.run(quiet_main, flags_parser=_parse_flags)
  except KeyboardInterrupt as e:
    signum = getattr(e, "signum", signal.SIGINT)
    print(f"error: interrupted by {signal.Signals(signum).name}; rerun the same command to go on"
          " (training resumes from its last checkpoint).", file=sys.stderr, flush=True)
    sys.exit(128 + signum)
