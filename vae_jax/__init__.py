"""vae_jax: variational autoencoders in JAX, after Sevkovych (2023).

The packages follow the thesis's order:

* `vae_jax.nn`: Ch. 1.1 and 2, the φ-deep networks (`activations`, `networks`,
  `autoencoders`) and the conv φ-layers (`conv`);
* `vae_jax.models`: the VAE's parts — posteriors q(z|x), priors p(z),
  likelihoods p(x|z), stochastic layers — and the models composed of them;
* `vae_jax.inference`: objectives (ELBO, k-sample bounds, gradient
  estimators) and evaluation (importance-sampled log-likelihood);
* `vae_jax.run`: Ch. 1.2 training (optimizers, the jitted step), the training
  loop and the files of a run (checkpoints, metrics, workdir);
* `vae_jax.datasets`: the datasets and the splits a run sees;
* `vae_jax.scale`: many seeds in one program, sweeps, multi-device;
* `vae_jax.applications`: compression, downstream features, generation,
  anomaly scores;
* `vae_jax.plots`: figures and network diagrams drawn from θ.

`vae_jax.config` holds the experiment configuration shared by all of them.
"""

__version__ = "0.1.0"
