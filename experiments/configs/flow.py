r"""The IWAE paper's one-layer model (784-200-200-50, tanh) with a flow posterior.

q(z|x) = the Gaussian posterior pushed through `length` steps of a planar
flow (Rezende & Mohamed 2015) or an inverse autoregressive flow (Kingma et
al. 2016; each step a MADE with hidden widths 320-320); the flow's exact
log-determinant enters log q. Dynamically binarised MNIST, ELBO (k=1).

  python -m experiments.train --config=experiments/configs/flow.py:kind=iaf,length=4 --workdir=workdirs/iaf4
  python -m experiments.train --config=experiments/configs/flow.py:kind=planar,length=8 --workdir=workdirs/planar8

Arguments: kind=planar|iaf, length=<int> (default 4), k=<int> (IWAE bound
when > 1), epochs=<int> (default 100). No measured result yet.
"""

from experiments import config_args as args_lib
from experiments.configs import iwae

ARGS = {"kind": ("planar", "iaf"), "length": int, "k": int, "epochs": int}


def get_config(arg: str = ""):
  args = args_lib.parse(arg, ARGS)
  k = args.get("k", 1)
  config = iwae.get_config(f"k={k},epochs={args.get('epochs', 100)}")
  config.model.flow = args.get("kind", "iaf")
  config.model.flow_length = args.get("length", 4)
  return config
