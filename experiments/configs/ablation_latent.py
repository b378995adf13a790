r"""Latent dimension sweep, 2 … 64: test −ELBO and IS-NLL, 2 seeds.

The default VAE 784-512-256-d (ReLU, Bernoulli, MNIST) for d = 2, 4, 8, 16,
32, 64 at the `default.py:quick` scale (10000 training images, 3 epochs, test
metrics on 1000 test images, IS-NLL with k=500). Every d ≤ 256 keeps the
encoder widths 784 ≥ 512 ≥ 256 ≥ d (Lemma 2.1.1) and the decoder's increasing.

  python -m experiments.sweep --config=experiments/configs/ablation_latent.py \
      --workdir=workdirs/ablation_latent --results=experiments/results/ablation_latent

Measured: experiments/results/ablation_latent.md (table) and .png (plot).
"""

from experiments.configs import ablation_common
from vae_jax.scale import sweeps

LATENT_DIMS = (2, 4, 8, 16, 32, 64)
SEEDS = (0, 1)


def get_config(arg: str = ""):
  return ablation_common.base_config(arg)


def get_sweep(arg: str = ""):
  del arg
  return sweeps.product(sweeps.sweep("model.latent_dim", LATENT_DIMS), sweeps.sweep("seed", SEEDS))
