r"""Convolutional VAE on MNIST: conv φ-layers 28→14→7 (32, 64 channels), latent 16.

  python -m experiments.train --config=experiments/configs/conv.py --workdir=workdirs/conv
"""

from vae_jax import config as config_lib


def get_config(arg: str = ""):
  config = config_lib.default_config()
  config.model.architecture = "conv"
  config.model.conv_channels = (32, 64)
  config.model.hidden_widths = (256,)
  config.model.latent_dim = 16
  config.training.num_epochs = 5 if arg != "quick" else 1
  config.eval.is_num_samples = 1000
  return config
