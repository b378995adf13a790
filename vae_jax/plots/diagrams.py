"""Network diagrams drawn from a parameter pytree θ (Figures 1.1, 2.1–2.3).

Nothing about a drawn network is typed in: every column's width is read off
the parameter shapes. A dense φ-layer θ_i = (W_i, b_i) with W_i ∈ ℝ^{m×k}
(Def. 1.1.4) joins a column of k neurons to one of m, and the diagram draws
all k·m connections, so a network of widths (d_0, …, d_L) shows
Σ_i d_i·d_{i+1} lines. A conv layer's kernel [k, k, C, C'] is drawn the same
way over channels (its connections are channel-to-channel).

`parts_of(params)` walks any parameter pytree of the package: a list of
(W, b) (`networks.init`), the autoencoder's {"encoder", "decoder"}
(`autoencoders.init_autoencoder`), a VAE's params (`vae.VAE.init`, mlp or
conv). Consecutive parts whose widths chain share a column (the bottleneck of
g ∘ f); otherwise they are joined by an arrow (flatten, reshape, or the
sampling z = μ + σ ⊙ ε between a VAE's 2d-wide encoder output and its
d-wide decoder input). That encoder output is the two heads μ and log σ² of
d neurons each: its column is split in two and labelled "μ | log σ²", "2×d".

Columns wider than `max_neurons` show their first and last neurons with a
"⋮" between them and their true width as label.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np
from matplotlib import collections as mcollections
from matplotlib import figure as mfigure
from matplotlib import patches

from vae_jax.nn import networks

COLOURS = {"input": "#4c9be8", "hidden": "#f2b134", "output": "#5cb85c",
           "bottleneck": "#d9534f"}
# Parameter-dict keys in drawing order; others (e.g. "log_scale") are not layers.
_ORDER = ("encoder", "conv", "dense", "conv_transpose", "decoder")


@dataclasses.dataclass(frozen=True)
class Part:
  """A chain of layers read from θ: its widths (d_0, …, d_L) and kind."""
  name: str
  widths: tuple
  kind: str = "dense"            # dense | conv | conv_transpose


@dataclasses.dataclass(frozen=True)
class Diagram:
  """What `draw` drew: the columns' widths and roles, and the line count."""
  widths: tuple                  # true width of each column
  shown: tuple                   # neurons drawn per column
  roles: tuple                   # input | hidden | output | bottleneck
  num_connections: int           # lines drawn = Σ shown_i · shown_{i+1} over joined columns
  labels: tuple = ()             # the text under each column


def _is_layer(node) -> bool:
  return (isinstance(node, (tuple, list)) and len(node) == 2
          and all(hasattr(leaf, "shape") for leaf in node))


def _chain_widths(layers, kind: str) -> tuple:
  if kind == "dense":
    return networks.widths_of(list(layers))
  # conv kernels [k, k, C_in, C_out]; transposed ones are stored [k, k, C_out, C_in].
  axis_in, axis_out = (2, 3) if kind == "conv" else (3, 2)
  widths = [int(layers[0][0].shape[axis_in])]
  for kernel, _ in layers:
    widths.append(int(kernel.shape[axis_out]))
  return tuple(widths)


def parts_of(params: Any, name: str = "network") -> list[Part]:
  """The layer chains of a parameter pytree, in the order data flows through them.

  Args:
    params: θ as a list of (W, b), or a dict of such (see the module docstring).
    name: the name of `params` ("network" at the top; nested parts are named
      by their path, e.g. "encoder/dense").

  Returns:
    One `Part` per chain of layers.

  Raises:
    ValueError: if `params` holds no layers.
  """
  if isinstance(params, dict):
    parts = []
    for key in _ORDER:
      if key in params:
        sub = params[key]
        path = key if name == "network" else f"{name}/{key}"
        if key in ("conv", "conv_transpose"):
          parts.append(Part(path, _chain_widths(sub, key), key))
        else:
          parts.extend(parts_of(sub, path))
    if not parts:
      raise ValueError(
          f"no layers in a dict with keys {sorted(params)}; give θ as a list of (W, b)"
          f" or a dict with keys among {', '.join(_ORDER)}.")
    return parts
  if isinstance(params, (list, tuple)) and params and all(_is_layer(l) for l in params):
    return [Part(name, _chain_widths(params, "dense"))]
  raise ValueError(
      f"cannot read layers from {type(params).__name__}; give θ as a list of (W, b)"
      " pairs or a dict of such lists.")


def _columns(parts: Sequence[Part]):
  """Merges chained parts into columns.

  Returns:
    (widths, kinds, joins, bottleneck, heads): per column its width and its
    part's kind; joins[i] labels the join of columns i and i+1 ("" = every
    connection drawn, else the arrow's label); the bottleneck column or None;
    the column of a VAE encoder's μ and log σ² heads or None.
  """
  widths, kinds = list(parts[0].widths), [parts[0].kind] * len(parts[0].widths)
  joins, bottleneck, heads = [""] * (len(widths) - 1), None, None
  for before, after in zip(parts[:-1], parts[1:]):
    crossing = before.name.startswith("encoder") and after.name.startswith("decoder")
    chained = before.widths[-1] == after.widths[0] and before.kind == after.kind == "dense"
    if chained:
      bottleneck = len(widths) - 1 if crossing else bottleneck
      new = after.widths[1:]
      joins.append("")
    else:
      bottleneck = len(widths) if crossing else bottleneck
      if before.kind != "dense" and after.kind == "dense":
        joins.append("flatten")
      elif before.kind == "dense" and after.kind != "dense":
        joins.append("reshape")
      else:
        joins.append("z = μ + σ⊙ε")
        if crossing and before.widths[-1] == 2 * after.widths[0]:
          heads = len(widths) - 1
      new = after.widths
    widths.extend(new)
    kinds.extend([after.kind] * len(new))
    joins.extend([""] * (len(new) - 1))
  return widths, kinds, joins, bottleneck, heads


def _column_label(width: int, kind: str, is_heads: bool) -> str:
  if is_heads:
    return f"2×{width // 2}\nμ | log σ²"
  return f"{width}" if kind == "dense" else f"{width}ch"


def _positions(width: int, shown: int) -> np.ndarray:
  """Vertical positions of the drawn neurons of one column (a gap for "⋮" if cut)."""
  if shown == width:
    return np.arange(shown, dtype=float)[::-1] - (shown - 1) / 2
  half = shown // 2
  slots = np.concatenate([np.arange(half), np.arange(half + 1, shown + 1)]).astype(float)
  return slots[::-1] - shown / 2


def draw(ax, params: Any, *, max_neurons: int = 10, bottleneck: Optional[int] = None,
         title: str = "", annotate: bool = True) -> Diagram:
  """Draws the network(s) of θ on a matplotlib Axes: neurons as circles in columns.

  Every connection between joined columns is drawn (one `LineCollection`);
  input, hidden, output and bottleneck neurons are coloured apart and the
  bottleneck is framed.

  Args:
    ax: a matplotlib Axes.
    params: θ (anything `parts_of` reads).
    max_neurons: columns wider than this show this many neurons and "⋮".
    bottleneck: index of the column to mark as bottleneck; default: the
      column joining an "encoder" and a "decoder" part, if any.
    title: the axes title.
    annotate: write each column's width below it.

  Returns:
    The `Diagram` that was drawn.
  """
  if max_neurons < 2:
    raise ValueError(f"max_neurons={max_neurons} must be ≥ 2 to show a cut column.")
  widths, kinds, joins, found, heads = _columns(parts_of(params))
  labels = [_column_label(w, k, i == heads) for i, (w, k) in enumerate(zip(widths, kinds))]
  bottleneck = found if bottleneck is None else bottleneck
  shown = [min(w, max_neurons) for w in widths]
  roles = ["input"] + ["hidden"] * (len(widths) - 2) + ["output"]
  if bottleneck is not None:
    roles[bottleneck] = "bottleneck"
  ys = [_positions(w, s) for w, s in zip(widths, shown)]
  bottom = -max(shown) / 2 - 0.2
  segments = []
  for i, label in enumerate(joins):
    if label:
      ax.annotate("", xy=(i + 0.8, 0), xytext=(i + 0.2, 0),
                  arrowprops=dict(arrowstyle="->", color="0.3"))
      ax.text(i + 0.5, bottom - 0.9, label, ha="center", va="top", fontsize=8,
              style="italic", color="0.3")
      continue
    segments.extend(((i, a), (i + 1, b)) for a in ys[i] for b in ys[i + 1])
  ax.add_collection(mcollections.LineCollection(segments, colors="0.55", linewidths=0.6,
                                                zorder=1))
  radius = 0.18
  for x, (column, width, count, role) in enumerate(zip(ys, widths, shown, roles)):
    for y in column:
      ax.add_patch(patches.Circle((x, y), radius, facecolor=COLOURS[role], edgecolor="k",
                                  linewidth=0.8, zorder=2))
    if count < width:
      ax.text(x, (column[count // 2 - 1] + column[count // 2]) / 2, "⋮", ha="center",
              va="center", fontsize=12, zorder=3)
    if annotate:
      ax.text(x, bottom, labels[x], ha="center", va="top", fontsize=8)
    if x == heads:   # the first half of the neurons is μ, the second log σ² (a cut column splits at ⋮)
      if count == width and count > 1:
        middle = (column[count // 2 - 1] + column[count // 2]) / 2
        ax.plot([x - 0.3, x + 0.3], [middle, middle], ls="--", color="0.3", lw=0.8, zorder=3)
      ax.text(x + 0.25, column.max(), "μ", ha="left", va="center", fontsize=8)
      ax.text(x + 0.25, column.min(), "log σ²", ha="left", va="center", fontsize=8)
    if role == "bottleneck":
      ax.add_patch(patches.FancyBboxPatch(
          (x - 0.35, column.min() - 0.4), 0.7, column.max() - column.min() + 0.8,
          boxstyle="round,pad=0.05", fill=False, linestyle="--", edgecolor=COLOURS[role],
          linewidth=1.2, zorder=3))
      ax.text(x, column.max() + 0.6, "bottleneck", ha="center", fontsize=9,
              color=COLOURS[role])
  ax.set_xlim(-0.6, len(widths) - 0.4)
  ax.set_ylim(bottom - 1.6, max(shown) / 2 + 1.2)
  ax.set_aspect("equal")
  ax.axis("off")
  if title:
    ax.set_title(title)
  legend = [patches.Patch(facecolor=COLOURS[r], edgecolor="k", label=r)
            for r in dict.fromkeys(roles)]
  ax.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=8,
            frameon=False, bbox_to_anchor=(0.5, -0.12))
  return Diagram(tuple(widths), tuple(shown), tuple(roles), len(segments), tuple(labels))


def diagram_figure(params: Any, **kwargs) -> tuple[mfigure.Figure, Diagram]:
  """A new matplotlib Figure with `draw(params, **kwargs)` on it (no pyplot state)."""
  shown = [min(w, kwargs.get("max_neurons", 10)) for w in _columns(parts_of(params))[0]]
  fig = mfigure.Figure(figsize=(0.75 * len(shown) + 1, 0.38 * max(shown) + 2.2))
  ax = fig.add_subplot()
  return fig, draw(ax, params, **kwargs)


def thesis_networks(key) -> dict:
  """θ of the thesis's network figures, built with the package's own init.

  Returns:
    {file stem: (θ, title, bottleneck column or None)} for Figure 1.1 (input 4,
    hidden 3, 4, 5, 3, 7, output 2), Figure 2.1 (autoencoder 5 → 4, 3, 2, 3, 4 → 5),
    Figure 2.2 (encoder 5 → 4, 3 → 2) and Figure 2.3 (decoder 2 → 3, 4 → 5).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from vae_jax.nn import autoencoders  # pylint: disable=g-import-not-at-top
  keys = [jax.random.fold_in(key, i) for i in range(4)]
  return {
      "figure_1_1_network": (networks.init(keys[0], (4, 3, 4, 5, 3, 7, 2)),
                             "Figure 1.1: a φ-deep network", None),
      "figure_2_1_autoencoder": (autoencoders.init_autoencoder(keys[1], (5, 4, 3, 2, 3, 4, 5)),
                                 "Figure 2.1: autoencoder g ∘ f", None),
      "figure_2_2_encoder": (autoencoders.init_encoder(keys[2], (5, 4, 3, 2)),
                             "Figure 2.2: encoder f (Lemma 2.1.1)", 3),
      "figure_2_3_decoder": (autoencoders.init_decoder(keys[3], (2, 3, 4, 5)),
                             "Figure 2.3: decoder g (Lemma 2.1.2)", 0),
  }
