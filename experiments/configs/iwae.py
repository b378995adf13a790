r"""The IWAE paper's model (Burda et al. 2016, 1 stochastic layer).

784-200-200-50 with tanh, Bernoulli decoder, dynamically binarised MNIST,
Adam. `k` is the number of importance samples of the training bound: k=1 is
the VAE (ELBO), k>1 the IWAE bound.

  python -m experiments.train --config=experiments/configs/iwae.py:k=1 --workdir=workdirs/iwae_k1
  python -m experiments.train --config=experiments/configs/iwae.py:k=5 --workdir=workdirs/iwae_k5
  python -m experiments.train --config=experiments/configs/iwae.py:k=1,static=1 --workdir=workdirs/vae_static

`static=1` trains on the static binarisation (`binarized_mnist`) instead.
The test NLL is the importance-sampled estimate with k=5000.

Measured 2026-11-25, seed 0, on one H100 with --config.training.batch_size=100
(experiments/results/iwae_table.md has the exact commands): VAE k=1, 600 epochs,
6.0 min: test NLL 88.60 ± 0.24 (paper 86.76); IWAE k=5, 350 epochs, 3.9 min:
87.76 ± 0.23 (paper 85.54); IWAE k=50, 100 epochs: 89.19 ± 0.24 (paper 84.78);
static binarized_mnist VAE, 600 epochs: 89.96 ± 0.25.
"""

from vae_jax import config as config_lib


def _parse(arg: str) -> dict:
  out = {}
  for item in filter(None, arg.split(",")):
    name, _, value = item.partition("=")
    if name not in ("k", "static", "epochs") or not value.isdigit():
      raise ValueError(f"bad config argument {item!r}; use k=<int>,static=<0|1>,epochs=<int>.")
    out[name] = int(value)
  return out


def get_config(arg: str = ""):
  args = _parse(arg)
  k = args.get("k", 1)
  config = config_lib.default_config()
  config.data.name = "binarized_mnist" if args.get("static") else "dynamic_binarized_mnist"
  config.model.hidden_widths = (200, 200)
  config.model.latent_dim = 50
  config.model.activation = "tanh"
  config.objective.name = "iwae" if k > 1 else "elbo"
  config.objective.num_samples = k
  config.training.batch_size = 20 if k == 1 else 100
  config.training.num_epochs = args.get("epochs", 100)
  config.training.steps_per_scan = 100
  config.training.checkpoint_every_steps = 5000
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "exponential"
  config.optimizer.decay_rate = 0.1
  config.optimizer.eps = 1e-4
  config.eval.is_num_samples = 5000
  return config
