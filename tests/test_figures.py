"""Diagrams drawn from θ, the figures of a trained run, their manifest, the IWAE table."""
import json
import os

import jax
import numpy as np
import pytest
from matplotlib import collections as mcollections
from matplotlib import patches

from conftest import tiny_config
from vae_jax.plots import diagrams
from vae_jax.models import vae as vae_lib

THESIS_WIDTHS = {
    "figure_1_1_network": (4, 3, 4, 5, 3, 7, 2),
    "figure_2_1_autoencoder": (5, 4, 3, 2, 3, 4, 5),
    "figure_2_2_encoder": (5, 4, 3, 2),
    "figure_2_3_decoder": (2, 3, 4, 5),
}


def shapes_to_widths(theta) -> tuple:
  """Widths from the shapes alone: W_i ∈ ℝ^{d_i × d_{i−1}} (encoder, then decoder without its input)."""
  if isinstance(theta, dict):
    encoder, decoder = shapes_to_widths(theta["encoder"]), shapes_to_widths(theta["decoder"])
    assert encoder[-1] == decoder[0]
    return encoder + decoder[1:]
  return (theta[0][0].shape[1],) + tuple(w.shape[0] for w, _ in theta)


def drawn(fig):
  """(line segments, neuron circles) actually on the figure's axes."""
  ax = fig.axes[0]
  lines = sum(len(c.get_segments()) for c in ax.collections if isinstance(c, mcollections.LineCollection))
  circles = sum(isinstance(p, patches.Circle) for p in ax.patches)
  return lines, circles


@pytest.mark.parametrize("stem", sorted(THESIS_WIDTHS))
def test_thesis_diagram_widths_and_connections_come_from_theta(stem):
  theta, _, bottleneck = diagrams.thesis_networks(jax.random.PRNGKey(0))[stem]
  fig, diagram = diagrams.diagram_figure(theta, bottleneck=bottleneck)
  widths = THESIS_WIDTHS[stem]
  assert shapes_to_widths(theta) == widths
  assert diagram.widths == widths and diagram.shown == widths
  lines, circles = drawn(fig)
  assert lines == diagram.num_connections == sum(a * b for a, b in zip(widths[:-1], widths[1:]))
  assert circles == sum(widths)
  assert diagram.roles[0] in ("input", "bottleneck") and diagram.roles[-1] in ("output", "bottleneck")


def test_autoencoder_bottleneck_is_the_shared_smallest_column():
  theta, _, _ = diagrams.thesis_networks(jax.random.PRNGKey(0))["figure_2_1_autoencoder"]
  diagram = diagrams.diagram_figure(theta)[1]
  assert diagram.roles == ("input", "hidden", "hidden", "bottleneck", "hidden", "hidden", "output")


def test_vae_diagrams_cut_wide_columns_and_join_by_sampling():
  model = vae_lib.VAE(hidden_widths=(64, 16), latent_dim=3)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))   # diagrams need shapes only
  fig, diagram = diagrams.diagram_figure(shapes, max_neurons=6)
  # encoder 784-64-16-6, then z = μ + σ⊙ε, decoder 3-16-64-784.
  assert diagram.widths == (784, 64, 16, 6, 3, 16, 64, 784)
  assert diagram.shown == (6, 6, 6, 6, 3, 6, 6, 6)
  assert diagram.roles[4] == "bottleneck"
  expected = 3 * 36 + 3 * 6 + 2 * 36        # no lines across the sampling arrow
  assert drawn(fig)[0] == diagram.num_connections == expected


def test_vae_encoder_output_is_labelled_as_the_mu_and_log_variance_heads():
  model = vae_lib.VAE(hidden_widths=(512, 256), latent_dim=32)
  fig, diagram = diagrams.diagram_figure(jax.eval_shape(model.init, jax.random.PRNGKey(0)))
  assert diagram.labels == ("784", "512", "256", "2×32\nμ | log σ²", "32", "256", "512", "784")
  texts = [t.get_text() for t in fig.axes[0].texts]
  assert "64" not in texts and "μ" in texts and "log σ²" in texts
  autoencoder, _, _ = diagrams.thesis_networks(jax.random.PRNGKey(0))["figure_2_1_autoencoder"]
  assert "μ" not in "".join(diagrams.diagram_figure(autoencoder)[1].labels)   # no heads in g ∘ f


def test_conv_vae_widths_are_read_from_kernels():
  model = vae_lib.VAE(architecture="conv", conv_channels=(4, 8), hidden_widths=(32,), latent_dim=2)
  parts = diagrams.parts_of(jax.eval_shape(model.init, jax.random.PRNGKey(0)))
  assert [(p.name, p.widths) for p in parts] == [
      ("encoder/conv", (1, 4, 8)), ("encoder/dense", (392, 32, 4)),
      ("decoder/dense", (2, 32, 392)), ("decoder/conv_transpose", (8, 4, 1))]


def test_unreadable_params_are_a_one_line_error():
  with pytest.raises(ValueError, match="list of \\(W, b\\)"):
    diagrams.parts_of({"weights": np.zeros(3)})


RUN_FIGURES = {"network", "reconstructions", "interpolations", "samples", "latent_scatter",
               "latent_manifold", "curves"}


def test_training_writes_figures_and_the_command_draws_them_with_a_manifest(raw_data, tfds_data_dir, tmp_path):
  from experiments import figures as figures_cli
  from vae_jax.run import train
  config = tiny_config(raw_data, tfds_data_dir, model__latent_dim=2, training__num_epochs=1,
                       eval__write_figures=True)
  workdir = str(tmp_path / "latent2")
  train.train_and_evaluate(config, workdir)
  written = {os.path.splitext(f)[0] for f in os.listdir(os.path.join(workdir, "figures"))}
  assert written == RUN_FIGURES

  out = str(tmp_path / "out")
  records = figures_cli.draw_diagrams(out)
  run_records, run = figures_cli.draw_run(workdir, out, command="python -m experiments.train ...")
  figures_cli.write_manifest(out, "python -m experiments.figures ...", records + run_records,
                             {"latent2": run})
  assert {r["name"] for r in run_records} == RUN_FIGURES
  manifest = json.load(open(os.path.join(out, "manifest.json")))
  listed = [(f["png"], f["pdf"]) for f in manifest["figures"]]
  assert len(listed) == len(THESIS_WIDTHS) + len(RUN_FIGURES)
  for png, pdf in listed:
    with open(os.path.join(out, png), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(out, pdf), "rb") as f:
      assert f.read(5) == b"%PDF-"
  on_disk = {os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs
             if f.endswith((".png", ".pdf"))}
  assert on_disk == {p for pair in listed for p in pair}
  assert manifest["runs"]["latent2"]["config"]["model"]["latent_dim"] == 2
  assert manifest["runs"]["latent2"]["train_command"] == "python -m experiments.train ..."
  markdown = open(os.path.join(out, "manifest.md")).read()
  assert all(png in markdown for png, _ in listed)
