r"""VAE and HVAE with a VampPrior (Tomczak & Welling 2018), dynamically binarised MNIST.

p(z) = (1/K) Σ_k q(z|u_k) with K = 500 learned pseudo-inputs (the paper's K),
hidden layers of 300 units and latents of 40 dimensions, as in the paper; KL
warm-up over the first 100 epochs, Adam 5e-4, batch 100.
* layers=1: x → 300 → 300 → z(40), VampPrior on z;
* layers=2: x → 300 → 300 → z₁(100) → 100 → 100 → z₂(40), VampPrior on z₂
  (q(z₂|u_k) takes u_k through q(z₁|·)'s mean).

Differences from the paper, stated: the networks are the thesis's φ-layers
(tanh here) where the paper uses gated dense layers; the two-layer model is
Burda et al.'s chain q(z₁|x) q(z₂|z₁), p(z₂) p(z₁|z₂) p(x|z₁), where the
paper's HVAE has q(z₂|x) q(z₁|x, z₂) and p(x|z₁, z₂); and z₁ has 100
dimensions instead of 40, because an encoder z₁(40) → 300 would widen, which
Lemma 2.1.1 (encoder widths non-increasing) forbids.

  python -m experiments.train --config=experiments/configs/vampprior.py:layers=1 --workdir=workdirs/vamp1
  python -m experiments.train --config=experiments/configs/vampprior.py:layers=2 --workdir=workdirs/vamp2
  python -m experiments.train --config=experiments/configs/vampprior.py:layers=1,prior=mixture --workdir=workdirs/mog1

Arguments: layers=1|2, prior=vampprior|mixture (a learned mixture of K
Gaussians, the simple baseline), epochs=<int> (default 200),
warmup_epochs=<int> (default 100). No measured result yet.
"""

from experiments import config_args as args_lib
from vae_jax import config as config_lib
from vae_jax.datasets import data as data_lib

ARGS = {"layers": int, "prior": ("vampprior", "mixture"), "epochs": int, "warmup_epochs": int}
TRAIN_EXAMPLES = 50000   # the train split; train_on_validation=True makes it 60000


def get_config(arg: str = ""):
  args = args_lib.parse(arg, ARGS)
  layers = args.get("layers", 1)
  if layers not in (1, 2):
    raise ValueError(f"bad config argument {arg!r}: layers must be 1 or 2.")
  config = config_lib.default_config()
  config.data.name = "dynamic_binarized_mnist"
  config.model.activation = "tanh"
  config.model.hidden_widths = (300, 300)
  config.model.latent_dim = 40
  if layers == 2:
    config.model.latent_dim = 100
    config.model.upper_latent_dims = (40,)
    config.model.upper_hidden_widths = (100, 100)
  config.model.prior = args.get("prior", "vampprior")
  config.model.prior_components = 500
  config.training.batch_size = 100
  config.training.num_epochs = args.get("epochs", 200)
  config.objective.kl_warmup_steps = args.get("warmup_epochs", 100) * data_lib.num_batches(
      TRAIN_EXAMPLES, config.training.batch_size)
  config.training.steps_per_scan = 100
  config.training.checkpoint_every_steps = 5000
  config.optimizer.learning_rate = 5e-4
  config.eval.is_num_samples = 5000
  return config
