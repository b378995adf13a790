r"""Activation ablation (Ex. 1.1.2): the default VAE with each activation, 3 seeds.

relu, leaky_relu, elu, softplus, tanh, sigmoid, gelu, silu in both encoder and
decoder of the MLP VAE 784-512-256-32 (Bernoulli decoder, MNIST), at the
`default.py:quick` scale: 10000 training images, 3 epochs, test −ELBO and
IS-NLL (k=500) on the first 1000 test images.

  python -m experiments.sweep --config=experiments/configs/ablation_activation.py \
      --workdir=workdirs/ablation_activation --results=experiments/results/ablation_activation

Measured: experiments/results/ablation_activation.md (table) and .png (plot).
"""

from experiments.configs import ablation_common
from vae_jax.scale import sweeps

ACTIVATIONS = ("relu", "leaky_relu", "elu", "softplus", "tanh", "sigmoid", "gelu", "silu")
SEEDS = (0, 1, 2)


def get_config(arg: str = ""):
  return ablation_common.base_config(arg)


def get_sweep(arg: str = ""):
  del arg
  return sweeps.product(sweeps.sweep("model.activation", ACTIVATIONS), sweeps.sweep("seed", SEEDS))
