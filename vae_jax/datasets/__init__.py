"""Datasets (TFDS, offline raw files, npz cache) and the splits a run sees."""
