r"""Depth/width sweep under the width conditions of Lemmas 2.1.1 and 2.1.2, 2 seeds.

Hidden widths (w, w/2, w/4)[:depth] for w = 128 and 512 and depth 1, 2, 3,
plus depth 0 (784-32 and 32-784: a linear-Gaussian encoder and a logistic
decoder): the encoder 784 ≥ h_1 ≥ … ≥ 32 shrinks (Lemma 2.1.1) and the decoder,
its mirror image, grows (Lemma 2.1.2); every point is checked by
`autoencoders.check_encoder_widths`/`check_decoder_widths` before training.
Latent dimension 32, ReLU, Bernoulli decoder, MNIST, at the `default.py:quick`
scale (10000 training images, 3 epochs, test metrics on 1000 test images,
IS-NLL with k=100).

  python -m experiments.sweep --config=experiments/configs/ablation_depth.py \
      --workdir=workdirs/ablation_depth --results=experiments/results/ablation_depth

Measured: experiments/results/ablation_depth.md (table) and .png (plot).
"""

from experiments.configs import ablation_common
from vae_jax.nn import autoencoders
from vae_jax.scale import sweeps

WIDTHS = (128, 512)
DEPTHS = (1, 2, 3)
SEEDS = (0, 1)


def hidden_widths() -> list[tuple]:
  """() and (w, w/2, w/4)[:depth] for each width w and depth."""
  return [()] + [tuple(w // 2 ** i for i in range(depth)) for w in WIDTHS for depth in DEPTHS]


def get_config(arg: str = ""):
  return ablation_common.base_config(arg, is_num_samples=100)  # cheaper than k=500 on the shared 2-core CPU


def get_sweep(arg: str = ""):
  del arg
  latent = get_config().model.latent_dim
  for widths in hidden_widths():
    autoencoders.check_encoder_widths((784, *widths, latent))
    autoencoders.check_decoder_widths((latent, *reversed(widths), 784))
  return sweeps.product(sweeps.sweep("model.hidden_widths", hidden_widths()), sweeps.sweep("seed", SEEDS))
