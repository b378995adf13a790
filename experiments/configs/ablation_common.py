"""The base config shared by the ablation sweeps (`ablation_*.py`); not a config itself.

`default.py:quick` (MLP VAE 784-512-256-32, ReLU, Bernoulli decoder, MNIST;
10000 training images, 3 epochs, test metrics on the first 1000 test images,
IS-NLL with k=500), without a progress bar since sweeps log to files.
"""

from experiments.configs import default


def base_config(arg: str = "", is_num_samples: int = 500):
  """The quick default config with IS-NLL over `is_num_samples` importance samples."""
  if arg:
    raise ValueError(f"unknown config argument {arg!r}; the ablation configs take none.")
  config = default.get_config("quick")
  config.training.progress_bar = False
  config.eval.is_num_samples = is_num_samples
  return config
