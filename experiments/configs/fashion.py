r"""VAE 784-512-256-32 on Fashion-MNIST with a continuous Bernoulli decoder.

  python -m experiments.train --config=experiments/configs/fashion.py --workdir=workdirs/fashion
"""

from vae_jax import config as config_lib


def get_config(arg: str = ""):
  config = config_lib.default_config()
  config.data.name = "fashion_mnist"
  config.model.likelihood = "continuous_bernoulli" if arg != "bernoulli" else "bernoulli"
  config.training.num_epochs = 20
  return config
