r"""Default experiment: MLP VAE 784-512-256-32 (ReLU), Bernoulli decoder, MNIST.

Launch (offline machines: export VAE_JAX_RAW_DATA_DIR=../shared/data first):

  python -m experiments.train --config=experiments/configs/default.py --workdir=workdirs/default
  python -m experiments.train --config=experiments/configs/default.py:quick --workdir=workdirs/quick

`quick` trains 3 epochs on 10000 images and evaluates IS-NLL with k=500 on
1000 test images: a few minutes on 2 CPU cores.

Measured 2026-11-25, seed 0, on 2 pinned Intel Xeon cores (JAX_PLATFORMS=cpu,
TensorBoard off; experiments/results/configs/):
  default: 20 epochs, 97 s training (105 s whole command, peak RSS 1.77 GB);
    test −ELBO 101.81 ± 0.25 nats; IS-NLL (k=5000, 10000 test images, computed on
    an H100 with `python -m experiments.evaluate --num_samples=5000`) 95.59 ± 0.23.
  quick: 3 epochs, 34 s whole command; test −ELBO 138.58 ± 1.19, IS-NLL (k=500,
    1000 images) 128.93 ± 1.11.
MNIST here is TFDS's continuous MNIST under a Bernoulli decoder (not a binarised benchmark).
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
