r"""β sweep of the β-VAE: the rate–distortion trade-off, 2 seeds.

Training minimises distortion + β · rate, with distortion −E_q[log p(x|z)] and
rate KL(q(z|x) ‖ p(z)); β < 1 buys reconstruction with rate, β > 1 the
opposite. The default VAE 784-512-256-32 (ReLU, Bernoulli, MNIST) at the
`default.py:quick` scale (10000 training images, 3 epochs, test metrics on
1000 test images, IS-NLL with k=100). The plot's last panel is the
rate–distortion plane (test KL against test −E_q log p(x|z)).

  python -m experiments.sweep --config=experiments/configs/ablation_beta.py \
      --workdir=workdirs/ablation_beta --results=experiments/results/ablation_beta

Measured: experiments/results/ablation_beta.md (table) and .png (plot).
"""

from experiments.configs import ablation_common
from vae_jax.scale import sweeps

BETAS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
SEEDS = (0, 1)


def get_config(arg: str = ""):
  return ablation_common.base_config(arg, is_num_samples=100)  # cheaper than k=500 on the shared 2-core CPU


def get_sweep(arg: str = ""):
  del arg
  return sweeps.product(sweeps.sweep("objective.beta", BETAS), sweeps.sweep("seed", SEEDS))
