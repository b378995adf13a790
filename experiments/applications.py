r"""Runs the VAE applications on trained workdirs and writes numbers and figures.

  python -m experiments.applications --app=compression --workdirs=W1,W2,...
  python -m experiments.applications --app=downstream  --workdirs=W1,W2,...
  python -m experiments.applications --app=anomaly     --workdirs=W1,W2,...
  python -m experiments.applications --app=generation  --workdirs=W1,...
  python -m experiments.applications --app=anomaly     --pretrained=NAME1,...   # models of the zoo

Each writes <app>.json and <app>.md (and figures) into --out, by default
`<workdir>/applications/` for one workdir and `<their common parent>/applications/`
for several (never into experiments/results/ unless --out says so):

* compression: the test split of each workdir's dataset encoded at every
  --precisions, bytes per image vs raw (784) and PNG, MSE and PSNR;
  compression.png is the rate–distortion plot.
* downstream: logistic regression (`vae_jax.applications.downstream`) on the codes μ(x) of
  the training split vs on raw pixels: test accuracy, fit time, storage.
* anomaly: −ELBO and IS-NLL scores on the test split; AUROC of the held-out
  class for workdirs trained with data.exclude_label, and of the other dataset
  (MNIST ↔ Fashion-MNIST) as out-of-distribution for the others.
* generation: temperature samples, linear and spherical interpolations and
  traversals of the most active latent dimensions as PNG grids.

The models of the README were trained with (5 epochs on the first 20000
training images; see README "Applications" for the exact set):

  COMMON="--config.data.train_subset=20000 --config.training.num_epochs=5 \
    --config.eval.num_examples=1000 --config.eval.is_num_samples=500"
  python -m experiments.train --config=experiments/configs/default.py $COMMON \
    --config.model.latent_dim=Z --workdir=workdirs/apps/mnist_zZ          # Z = 2, 8, 32
  python -m experiments.train --config=experiments/configs/fashion.py:bernoulli $COMMON \
    --config.model.latent_dim=Z --workdir=workdirs/apps/fashion_zZ        # Z = 2, 8, 32
  python -m experiments.train --config=experiments/configs/default.py $COMMON \
    --config.model.latent_dim=8 --config.data.exclude_label=K \
    --workdir=workdirs/apps/mnist_z8_withoutK                             # K = 0, 1, 7, 9
"""

import dataclasses
import io
import json
import os
import sys
import time

from absl import flags
import jax
import numpy as np
from PIL import Image

from experiments import cli

APPS = ("compression", "downstream", "anomaly", "generation")


@dataclasses.dataclass(frozen=True)
class Options:
  """What every application reads besides the models (the command-line flags)."""
  out: str = ""              # "" = default_out(workdirs)
  precisions: tuple = ("1", "2", "3", "4", "6", "8", "float16", "float32")
  num_examples: int = 0      # test images used (0 = the whole split)
  num_train: int = 0         # downstream: training images used (0 = all)
  is_num_samples: int = 100  # anomaly: K of the IS-NLL
  fit_steps: int = 500       # downstream: full-batch Adam steps
  seed: int = 0              # seed of every random draw


OTHER_DATASET = {"mnist": "fashion_mnist", "fashion_mnist": "mnist"}


def _split(config, options, split, dataset=None):
  from vae_jax.datasets import data  # pylint: disable=g-import-not-at-top
  loaded = data.load_split(dataset or config.data.name, split, data_dir=config.data.data_dir or None,
                           raw_data_dir=config.data.raw_data_dir or None)
  n = {"test": options.num_examples, "train": options.num_train}.get(split) or len(loaded)
  return loaded.images[:n], None if loaded.labels is None else loaded.labels[:n]


def _name(workdir: str) -> str:
  return os.path.basename(os.path.normpath(workdir))


def png_bytes(images: np.ndarray, image_shape) -> np.ndarray:
  """Size of each image [N, D] saved as an 8-bit greyscale PNG (optimize=True)."""
  sizes = []
  for image in images:
    buffer = io.BytesIO()
    pixels = (image.reshape(image_shape[:2]) * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    sizes.append(buffer.tell())
  return np.asarray(sizes)


def run_compression(loaded, options):
  from vae_jax.applications import compression  # pylint: disable=g-import-not-at-top
  rows, png = [], {}
  for workdir, (config, model, params) in loaded.items():
    images, _ = _split(config, options, "test")
    if config.data.name not in png:
      png[config.data.name] = float(png_bytes(images, model.input_shape).mean())
    for precision in options.precisions:
      blob = compression.compress(model, params, images, precision)
      scores = compression.distortion(images, compression.decompress(model, params, blob))
      rows.append(dict(workdir=_name(workdir), dataset=config.data.name,
                       latent_dim=model.latent_dim, precision=compression.parse_precision(precision),
                       bits_per_image=compression.bits_per_image(model.latent_dim, precision),
                       bytes_per_image=len(blob) / len(images), file_bytes=len(blob), num_images=len(images), raw_bytes=model.data_dim,
                       png_bytes=png[config.data.name], **scores))
  _plot_rate_distortion(rows, os.path.join(options.out, "compression.png"))
  return rows, ("dataset", "latent_dim", "precision", "bits_per_image", "bytes_per_image", "raw_bytes",
                "png_bytes", "mse", "psnr")


def _plot_rate_distortion(rows, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  datasets = sorted({r["dataset"] for r in rows})
  fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
  for ax, dataset in zip(axes[0], datasets):
    mine = [r for r in rows if r["dataset"] == dataset]
    for latent_dim in sorted({r["latent_dim"] for r in mine}):
      line = sorted((r for r in mine if r["latent_dim"] == latent_dim),
                    key=lambda r: r["bytes_per_image"])
      ax.plot([r["bytes_per_image"] for r in line], [r["psnr"] for r in line], "o-",
              label=f"VAE d={latent_dim}")
    ax.axvline(mine[0]["png_bytes"], color="gray", ls="--", label="PNG (lossless)")
    ax.axvline(mine[0]["raw_bytes"], color="black", ls=":", label="raw uint8")
    ax.set(xscale="log", xlabel="bytes per image", ylabel="PSNR (dB)", title=dataset)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def run_downstream(loaded, options):
  from vae_jax.applications import compression  # pylint: disable=g-import-not-at-top
  from vae_jax.applications import downstream  # pylint: disable=g-import-not-at-top
  rows, done = [], set()
  for workdir, (config, model, params) in loaded.items():
    train_x, train_y = _split(config, options, "train")
    test_x, test_y = _split(config, options, "test")
    fit = lambda a, b: downstream.compare(a, train_y, b, test_y, 10, steps=options.fit_steps)
    if config.data.name not in done:
      done.add(config.data.name)
      rows.append(dict(fit(train_x, test_x), dataset=config.data.name, features="pixels",
                       bytes_per_example=model.data_dim, encode_time_s=0.0))
    start = time.perf_counter()
    train_z = compression.latent_means(model, params, train_x)
    encode_time = time.perf_counter() - start
    rows.append(dict(fit(train_z, compression.latent_means(model, params, test_x)),
                     dataset=config.data.name, features=f"VAE μ ({_name(workdir)})",
                     bytes_per_example=compression.bits_per_image(model.latent_dim, 8) / 8,
                     encode_time_s=encode_time))
  return rows, ("dataset", "features", "feature_dim", "test_accuracy", "fit_time_s",
                "encode_time_s", "bytes_per_example", "train_set_float32_bytes")


def run_anomaly(loaded, options):
  from vae_jax.applications import anomaly  # pylint: disable=g-import-not-at-top
  rows = []
  key = jax.random.PRNGKey(options.seed)
  for workdir, (config, model, params) in loaded.items():
    images, labels = _split(config, options, "test")
    score = lambda x, i: anomaly.scores(model, params, x, jax.random.fold_in(key, i),
                                        num_samples=options.is_num_samples)
    scores = score(images, 0)
    held_out = config.data.exclude_label
    if held_out >= 0:
      normal = {k: v[labels != held_out] for k, v in scores.items()}
      anomalous = {k: v[labels == held_out] for k, v in scores.items()}
      anomalies = f"digit {held_out}"
    else:
      other = OTHER_DATASET.get(config.data.name)
      if other is None:
        continue
      normal, anomalous = scores, score(_split(config, options, "test", other)[0], 1)
      anomalies = f"{other} test"
    for name, result in anomaly.evaluate(normal, anomalous).items():
      rows.append(dict(result, workdir=_name(workdir), trained_on=config.data.name,
                       anomalies=anomalies, score=name, is_num_samples=options.is_num_samples))
  return rows, ("workdir", "anomalies", "score", "auroc", "mean_normal", "mean_anomaly",
                "num_normal", "num_anomaly")


def run_generation(loaded, options):
  from vae_jax.applications import compression  # pylint: disable=g-import-not-at-top
  from vae_jax.applications import generation  # pylint: disable=g-import-not-at-top
  from vae_jax.plots import image_grid  # pylint: disable=g-import-not-at-top
  rows = []
  key = jax.random.PRNGKey(options.seed)
  folder = os.path.join(options.out, "generation")
  for workdir, (config, model, params) in loaded.items():
    name, shape = _name(workdir), model.input_shape
    images, _ = _split(config, options, "test")
    temperatures = (0.5, 0.75, 1.0, 1.25)
    image_grid.save_grid(generation.temperature_grid(model, params, key, temperatures),
                         os.path.join(folder, f"{name}_temperatures.png"), shape)
    for method in generation.INTERPOLATIONS:
      grid = generation.interpolation_grid(model, params, images[:6], images[6:12], 10, method)
      image_grid.save_grid(grid, os.path.join(folder, f"{name}_interpolation_{method}.png"), shape)
    activity = generation.active_units(compression.latent_means(model, params, images))
    dims = [int(j) for j in np.argsort(-activity)[:min(8, model.latent_dim)]]
    grid = generation.traversal_grid(model, params, images[0], dims, np.linspace(-3, 3, 10))
    image_grid.save_grid(grid, os.path.join(folder, f"{name}_traversal.png"), shape)
    rows.append(dict(workdir=name, latent_dim=model.latent_dim, temperatures=list(temperatures),
                     active_units=int((activity >= 0.01).sum()), traversed_dims=dims,
                     activity=[round(float(a), 4) for a in activity]))
  return rows, ("workdir", "latent_dim", "active_units", "traversed_dims", "temperatures")


def markdown_table(rows, columns) -> str:
  """A Markdown table of `columns` of `rows` (floats to 4 significant digits)."""
  cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
  lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
  return "\n".join(lines) + "\n"


def default_out(workdirs) -> str:
  """`<workdir>/applications` for one workdir, `<common parent>/applications` for several."""
  paths = [os.path.abspath(w) for w in workdirs]
  parent = os.path.commonpath(paths) if len(paths) > 1 else paths[0]
  if len(paths) > 1 and parent in (os.sep, os.path.abspath(os.curdir)):
    raise ValueError(f"--workdirs {', '.join(workdirs)} share no folder of their own to write into;"
                     " give --out=<results folder>.")
  return os.path.join(parent, "applications")


def run(app: str, workdirs, options: Options = Options(), command: str = "", pretrained=()) -> list[dict]:
  """Runs `app` on trained `workdirs` and zoo models `pretrained`; writes <out>/<app>.{json,md}; returns the rows."""
  from vae_jax.run import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from vae_jax.run import zoo  # pylint: disable=g-import-not-at-top
  if app not in APPS:
    raise ValueError(f"app={app!r} is unknown; choose one of {', '.join(APPS)}.")
  if not workdirs and not pretrained:
    raise ValueError("no models: give --workdirs=W1,... (trained workdirs) or --pretrained=NAME,... (zoo models).")
  if not options.out and not workdirs:
    raise ValueError("zoo models have no workdir to write into; give --out=<results folder>.")
  options = dataclasses.replace(options, out=options.out or default_out(workdirs))
  loaded = {w: workdir_lib.load_trained(w) for w in workdirs}
  loaded.update((zoo.entry_dir(name), zoo.load_pretrained(name)) for name in pretrained)
  os.makedirs(options.out, exist_ok=True)
  start = time.time()
  rows, columns = globals()[f"run_{app}"](loaded, options)
  record = {"command": command, "options": dataclasses.asdict(options),
            "wall_time_s": time.time() - start, "rows": rows}
  with open(os.path.join(options.out, f"{app}.json"), "w") as f:
    json.dump(record, f, indent=1)
  table = markdown_table(rows, columns)
  with open(os.path.join(options.out, f"{app}.md"), "w") as f:
    f.write(f"`{command}`\n\n{table}" if command else table)
  print(table)
  print(f"Results in {options.out}{os.sep} ({app}.json, {app}.md)")
  return rows


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so tests can import the module)."""
  defaults = Options()
  flags.DEFINE_enum("app", None, APPS, "The application to run.")
  flags.DEFINE_list("workdirs", [], "Comma-separated workdirs of trained models.")
  flags.DEFINE_list("pretrained", [], "Comma-separated models of the zoo (vae_jax.run.zoo).")
  flags.DEFINE_string("out", defaults.out, "Results folder (default: <workdir>/applications, or"
                      " <common parent of the workdirs>/applications).")
  flags.DEFINE_list("precisions", list(defaults.precisions),
                    "compression: float32, float16 or bits per dimension.")
  flags.DEFINE_integer("num_examples", defaults.num_examples, "Test images used (0 = all).")
  flags.DEFINE_integer("num_train", defaults.num_train, "downstream: training images (0 = all).")
  flags.DEFINE_integer("is_num_samples", defaults.is_num_samples, "anomaly: K of the IS-NLL.")
  flags.DEFINE_integer("fit_steps", defaults.fit_steps, "downstream: full-batch Adam steps.")
  flags.DEFINE_integer("seed", defaults.seed, "Seed of every random draw.")
  flags.mark_flags_as_required(["app"])


def main(argv):
  del argv
  args = flags.FLAGS
  options = Options(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Options)})
  options = dataclasses.replace(options, precisions=tuple(options.precisions))
  with cli.one_line_errors():
    run(args.app, args.workdirs, options,
        "python -m experiments.applications " + " ".join(sys.argv[1:]), args.pretrained)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
