r"""Default experiment: MLP VAE 784-512-256-32 (ReLU), Bernoulli decoder, MNIST.

Launch (offline machines: export VAE_JAX_RAW_DATA_DIR=../shared/data first):

  python -m experiments.train --config=experiments/configs/default.py --workdir=workdirs/default
  python -m experiments.train --config=experiments/configs/default.py:quick --workdir=workdirs/quick

`quick` trains 3 epochs on 10000 images and evaluates IS-NLL with k=500 on
1000 test images: a few minutes on 2 CPU cores.

Measured (2 CPU cores; see README "Results"): MEASURED_DEFAULT
"""

from vae_jax import config as config_lib


def get_config(arg: str = ""):
  config = config_lib.default_config()
  config.training.num_epochs = 20
  if arg == "quick":
    config.data.train_subset = 10000
    config.training.num_epochs = 3
    config.eval.num_examples = 1000
    config.eval.is_num_samples = 500
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use '' or 'quick'.")
  return config
