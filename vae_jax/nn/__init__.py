"""Ch. 1.1 and 2: activations, φ-neurons, φ-layers, φ-deep networks, autoencoders, conv φ-layers."""
