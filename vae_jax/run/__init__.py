"""Ch. 1.2 training: optimizers, the jitted step, the training loop and a run's files."""
