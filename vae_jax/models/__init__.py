"""The VAE's parts (posteriors, priors, likelihoods, stochastic layers) and the models built from them."""
