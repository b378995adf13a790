"""vae_jax: variational autoencoders in JAX, after Sevkovych (2023).

Modules follow the thesis: `activations` (Def. 1.1.1), `networks`
(Def. 1.1.3–1.1.5), `autoencoders` (Ch. 2), then the VAE, its training and
its applications.
"""

__version__ = "0.1.0"
