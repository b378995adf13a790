r"""Deterministic autoencoder of Ch. 2: encoder 784-512-256-32, decoder back.

The loss is −log p(x | g(f(x))) of the Gaussian decoder with fixed σ, i.e. the
squared reconstruction error ‖x − g(f(x))‖² up to scale and constant.

  python -m experiments.train --config=experiments/configs/autoencoder.py --workdir=workdirs/ae

Measured 2026-11-25, seed 0, 2 pinned Xeon cores: 10 epochs, 43 s training;
test log p(x | g(f(x))) = 682.59 ± 1.81 (Gaussian density, σ=0.1), i.e. the mean
squared error per image ‖x − g(f(x))‖² ≈ 2σ²(Σ log N normaliser − 682.6).
"""

from vae_jax import config as config_lib


def get_config(arg: str = ""):
  config = config_lib.default_config()
  config.objective.name = "ae"
  config.model.likelihood = "gaussian"
  config.training.num_epochs = 10 if arg != "quick" else 2
  config.eval.is_num_samples = 0
  return config
