"""Objectives (ELBO, k-sample bounds, gradient estimators) and evaluation (log-likelihood estimates)."""
