r"""Trains one experiment: `python -m experiments.train --config=... --workdir=...`.

  python -m experiments.train --config=experiments/configs/default.py --workdir=workdirs/default
  python -m experiments.train --config=experiments/configs/default.py:quick \
      --config.model.latent_dim=2 --workdir=workdirs/latent2

Rerunning the same command resumes from the newest checkpoint in --workdir.
Errors the user can fix (bad config values, missing data, an unusable workdir,
divergence) print one line and exit with status 1.
"""


from absl import flags
from ml_collections import config_flags

from experiments import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and images.")
flags.mark_flags_as_required(["config", "workdir"])
# Multi-host (see BUILD.md "Multi-device and multi-host"); empty: $JAX_COORDINATOR_ADDRESS etc.
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "host:port of process 0 of a multi-host run.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Number of processes of a multi-host run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's number, 0 … num_processes − 1.")
_AUTODETECT = flags.DEFINE_bool("distributed_autodetect", False,
                                "Let JAX find the processes (Cloud TPU pod slice, Slurm, Open MPI).")


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments {' '.join(argv[1:])!r}; give every setting as a"
                     " flag, e.g. --config.model.latent_dim=2")
  from vae_jax.scale import sharding  # pylint: disable=g-import-not-at-top
  from vae_jax.run import train  # pylint: disable=g-import-not-at-top
  with cli.one_line_errors():
    sharding.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                    _AUTODETECT.value)
    results = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  print({k: round(v, 4) if isinstance(v, float) else v for k, v in results.items()})


if __name__ == "__main__":
  cli.run(main)
