"""Installs vae_jax: `pip install -e .` (add `[test]` for the test tools, `[trackers]` for W&B/MLflow,
`[cluster]` for Ray).

The build system is declared in pyproject.toml; the metadata lives here.
"""
import setuptools

setuptools.setup(
    name="vae_jax",
    version="0.1.0",
    description=(
        "Variational autoencoders in JAX, following 'On variational "
        "autoencoders: theory and applications' (Sevkovych, 2023)."
    ),
    packages=setuptools.find_packages(include=["vae_jax", "vae_jax.*", "experiments", "experiments.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.30",
        "flax>=0.8.5",
        "optax>=0.2.3",
        "chex>=0.1.86",
        "orbax-checkpoint>=0.6.0",
        "ml_collections>=0.1.1",
        "absl-py>=2.1.0",
        "numpy>=1.26",
        "tensorflow-datasets>=4.9.6",
        # TFDS needs TensorFlow to prepare datasets (see BUILD.md); the CPU
        # build is enough and never touches an accelerator.
        "tensorflow-cpu>=2.16",
        "tensorboard>=2.16",  # event files (flax.metrics.tensorboard)
        "importlib_resources>=6.0",
        "pillow>=10.0",
        "matplotlib>=3.8",
        "tqdm>=4.66",
        "psutil>=5.9",
    ],
    extras_require={
        "test": [
            "pytest>=8.0",
            "pytest-xdist>=3.5",
            "hypothesis>=6.100",
            "scipy>=1.11",
        ],
        # Optional experiment trackers (vae_jax.run.trackers): --config.logging.wandb=True,
        # --config.logging.mlflow_uri=...
        "trackers": ["wandb>=0.19", "mlflow>=2.16"],
        # benchmarks/torch_reference.py only; a cached CPU build (other versions are large downloads).
        "bench": ["torch==2.13.0"],
        # experiments/sweep.py --executor=ray (BUILD.md, "Sweeps on a cluster").
        "cluster": ["ray>=2.10"],
    },
)
