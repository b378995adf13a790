"""Figures of a trained run, each written as PNG and PDF under a stable name.

`write_run_figures(config, model, params, out_dir)` draws, from the model
and the run's test split:

  network          the model's own θ as a diagram (`vae_jax.plots.diagrams`)
  reconstructions  test inputs (odd rows) above E[x | z = μ(x)] (even rows)
  samples          E[x|z] for z ~ p(z) = N(0, I) (VAEs only)
  latent_scatter   μ(x) of test images coloured by label (latent_dim = 2)
  latent_manifold  E[x|z] over a grid z = (Φ⁻¹(u₁), Φ⁻¹(u₂)), u on an even
                   grid in (0, 1), so that the grid has equal prior mass per
                   cell (Kingma & Welling 2014, Fig. 4) (latent_dim = 2)
  interpolations   E[x|z] along z_t = (1 − t) μ(x_a) + t μ(x_b), t ∈ [0, 1],
                   for pairs of test images (one row per pair)
  curves           training loss and validation −ELBO from metrics.jsonl,
                   the final test −ELBO / IS-NLL as markers

Training calls it at the end of a run (config.eval.write_figures) with the
final parameters; `python -m experiments.figures` redraws them for any
workdir from its newest verified checkpoint (`vae_jax.run.workdir.load_trained`).
All randomness comes from fold_in(PRNGKey(config.seed), 3).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib import figure as mfigure

from vae_jax.datasets import splits
from vae_jax.applications import compression
from vae_jax.plots import diagrams
from vae_jax.applications import generation
from vae_jax.plots import image_grid
from vae_jax.run import metrics as metrics_lib

FIGURE_KEY = 3   # fold_in(PRNGKey(seed), 3): the figures' randomness


def save(fig: mfigure.Figure, out_dir: str, stem: str) -> dict:
  """Writes `fig` as <out_dir>/<stem>.png and .pdf; returns {"png": path, "pdf": path}."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {}
  for ext in ("png", "pdf"):
    path = os.path.join(out_dir, f"{stem}.{ext}")
    fig.savefig(path + f".tmp.{ext}", dpi=150, bbox_inches="tight")
    os.replace(path + f".tmp.{ext}", path)
    paths[ext] = path
  return paths


def grid_figure(images: np.ndarray, title: str, image_shape=(28, 28), ncols: int = 10):
  """A figure showing `image_grid.make_grid(images)` in grey."""
  grid = image_grid.make_grid(images, image_shape, ncols)
  fig = mfigure.Figure(figsize=(grid.shape[1] / 50 + 0.4, grid.shape[0] / 50 + 0.6))
  ax = fig.add_subplot()
  ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
  ax.set_title(title, fontsize=10)
  ax.axis("off")
  return fig


def reconstructions(model, params, images, rows: int = 4, ncols: int = 10):
  """Inputs above their reconstructions, `rows` such pairs of rows."""
  inputs = images[:rows * ncols].reshape(rows, ncols, -1)
  recon = jax.vmap(model.reconstruct, in_axes=(None, 0))(params, jnp.asarray(inputs.reshape(rows * ncols, -1)))
  pairs = np.stack([inputs, np.asarray(recon).reshape(inputs.shape)], axis=1)   # [rows, 2, ncols, D]
  return grid_figure(pairs.reshape(-1, inputs.shape[-1]), "test inputs (odd rows) and reconstructions (even rows)",
                     model.input_shape, ncols)


def samples(model, params, key, num: int = 100):
  """E[x|z] for `num` draws z ~ N(0, I)."""
  return grid_figure(np.asarray(model.sample(params, key, num)), "samples from the prior z ~ N(0, I)",
                     model.input_shape)


def latent_scatter(codes: np.ndarray, labels, code_name: str = "μ"):
  """Codes (μ(x), or f(x) of the deterministic AE) in the plane, coloured by label."""
  fig = mfigure.Figure(figsize=(5.5, 5))
  ax = fig.add_subplot()
  if labels is None:
    ax.scatter(codes[:, 0], codes[:, 1], s=2, alpha=0.5)
  else:
    points = ax.scatter(codes[:, 0], codes[:, 1], c=labels, cmap="tab10", s=2, alpha=0.6,
                        vmin=-0.5, vmax=9.5)
    fig.colorbar(points, ax=ax, ticks=range(10), label="label")
  ax.set_xlabel(f"{code_name}₁(x)")
  ax.set_ylabel(f"{code_name}₂(x)")
  ax.set_title(f"codes {code_name}(x) of {len(codes)} test images")
  return fig


def latent_manifold(model, params, size: int = 20, codes: np.ndarray | None = None):
  """The decoder over a size × size grid of z.

  With `codes` None (a VAE): z_i = Φ⁻¹(u_i), u on an even grid in [0.05, 0.95],
  equal prior mass per cell. With codes (the deterministic AE, which has no
  prior): an even grid between the 1st and 99th percentiles of the codes.
  """
  if codes is None:
    axes = [np.asarray(jax.scipy.stats.norm.ppf(jnp.linspace(0.05, 0.95, size)))] * 2
  else:
    axes = [np.linspace(*np.percentile(codes[:, i], [1, 99]), size) for i in range(2)]
  z1, z2 = np.meshgrid(axes[0], axes[1][::-1])
  z = jnp.asarray(np.stack([z1.ravel(), z2.ravel()], axis=1), jnp.float32)
  title = "decoder over a grid of " + ("z (Φ⁻¹ of an even grid)" if codes is None else "codes")
  return grid_figure(compression.decode_latents(model, params, z), title, model.input_shape, size)


def interpolations(model, params, images, pairs: int = 8, steps: int = 10):
  """One row per pair of test images: E[x|z_t] for z_t from μ(x_a) to μ(x_b)."""
  means = generation.interpolation_grid(model, params, images[0:2 * pairs:2], images[1:2 * pairs:2], steps)
  return grid_figure(means, "interpolations between the codes of test images",
                     model.input_shape, steps)


def curves(records: list[dict]):
  """Training loss and validation loss against the step; test values as markers."""
  fig = mfigure.Figure(figsize=(7, 4.2))
  ax = fig.add_subplot()
  train = [r for r in records if r["split"] == "train" and "loss" in r]
  finite = [(r["step"], r["loss"]) for r in train if isinstance(r["loss"], (int, float))]
  if finite:
    steps, losses = map(np.asarray, zip(*finite))
    window = len(losses) // 50
    ax.plot(steps, losses, lw=0.6, alpha=0.35 if window > 1 else 0.9, color="C0",
            label="training loss (one batch)")
    if window > 1:   # a moving average over 1/50 of the records
      ax.plot(steps[window - 1:], np.convolve(losses, np.ones(window) / window, "valid"), lw=1.2,
              color="C0", label=f"training loss (mean of {window} records)")
  colours = iter(f"C{i}" for i in range(1, 10))
  for split, marker in (("validation", "o-"), ("test", "s")):
    rows = [r for r in records if r["split"] == split]
    for name, label in (("neg_elbo", "−ELBO"), ("neg_recon", "−log p(x|f(x))"), ("nll", "IS-NLL")):
      values = [(r["step"], r[name]) for r in rows if isinstance(r.get(name), (int, float))]
      if values:
        steps, ys = zip(*values)
        ax.plot(steps, ys, marker, ms=4, color=next(colours), label=f"{split} {label}")
  ax.set_xlabel("step")
  ax.set_ylabel("nats per image")
  if finite:   # the first steps' loss would squash the rest of the curve
    ax.set_ylim(top=float(np.percentile(losses, 98)) * 1.05)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  ax.set_title("training and validation curves")
  return fig


def write_run_figures(config: ml_collections.ConfigDict, model, params: dict, out_dir: str,
                      metrics_path: str | None = None) -> list[dict]:
  """Writes every figure of a run that applies to its model into `out_dir`.

  Args:
    config: the run's config (for the data and the seed).
    model: the `vae.VAE`.
    params: its parameters.
    out_dir: the folder for <name>.png and <name>.pdf.
    metrics_path: the run's metrics.jsonl (curves are skipped if None or missing).

  Returns:
    One record per figure: {"name", "png", "pdf", "description"}.
  """
  test = splits.load_data(config, "test")
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), FIGURE_KEY)
  figures = [("network", diagrams.diagram_figure(
                  params, title=f"θ of this run (latent dimension {model.latent_dim})")[0],
              "the model's θ as a network diagram (widths read from the parameter shapes)"),
             ("reconstructions", reconstructions(model, params, test.images),
              "test inputs above their reconstructions (decoder mean at the code)"),
             ("interpolations", interpolations(model, params, test.images),
              "decoder along straight lines between the codes of test images")]
  if model.stochastic:
    figures.append(("samples", samples(model, params, key), "decoder means of z ~ N(0, I)"))
  if model.latent_dim == 2:
    codes, code_name = compression.latent_means(model, params, test.images), "μ" if model.stochastic else "f"
    figures.append(("latent_scatter", latent_scatter(codes, test.labels, code_name),
                    f"codes {code_name}(x) of the test set"
                    + (", coloured by label" if test.labels is not None else "")))
    figures.append(("latent_manifold", latent_manifold(model, params, codes=None if model.stochastic else codes),
                    "decoder over a 20×20 grid of z with equal prior mass per cell" if model.stochastic
                    else "decoder over a 20×20 grid spanning the codes' 1st–99th percentiles"))
  if metrics_path and os.path.exists(metrics_path):
    figures.append(("curves", curves(metrics_lib.read_metrics(metrics_path)),
                    "training loss, validation and test scores against the step"))
  return [dict(name=name, description=description, **save(fig, out_dir, name))
          for name, fig, description in figures]
