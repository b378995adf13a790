r"""Compresses images to VAE codes and back (`vae_jax.applications.compression`).

  # a dataset split (default: the workdir's dataset) -> one file
  python -m experiments.compress encode --workdir=workdirs/apps/mnist_z8 \
      --split=test --precision=8 --output=/tmp/mnist_test.vaez
  # a folder of 28×28 greyscale PNGs (read in sorted name order) -> one file
  python -m experiments.compress encode --workdir=workdirs/apps/mnist_z8 \
      --input_dir=pngs/ --precision=float16 --output=/tmp/pngs.vaez
  # a file -> reconstructions 000000.png, 000001.png, ... (same order)
  python -m experiments.compress decode --workdir=workdirs/apps/mnist_z8 \
      --input=/tmp/mnist_test.vaez --output_dir=/tmp/decoded

--precision is float32, float16, or bits per latent dimension (1–16). Decoding
needs the workdir that encoded the file (the header's model id is checked). A
wrong model, a truncated or a foreign file exits 1 with a one-line error.
"""

import os

from absl import flags
import numpy as np
from PIL import Image

from experiments import cli

def read_pngs(folder: str, image_shape) -> np.ndarray:
  """The *.png files of `folder` in sorted order as [N, H·W] greyscale in [0, 1]."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"--input_dir={folder} is not a folder of PNG images.")
  names = sorted(n for n in os.listdir(folder) if n.lower().endswith(".png"))
  if not names:
    raise ValueError(f"--input_dir={folder} holds no .png files; give a folder of PNG images.")
  images = []
  for name in names:
    with Image.open(os.path.join(folder, name)) as image:
      pixels = np.asarray(image.convert("L"), np.float32) / 255.0
    if pixels.shape != tuple(image_shape[:2]):
      raise ValueError(f"{name} is {pixels.shape[1]}×{pixels.shape[0]} pixels but the model takes"
                       f" {image_shape[1]}×{image_shape[0]}; resize it first.")
    images.append(pixels.reshape(-1))
  return np.stack(images)


def write_pngs(images: np.ndarray, folder: str, image_shape) -> None:
  """Writes images [N, H·W] in [0, 1] as 000000.png, 000001.png, … into `folder`."""
  os.makedirs(folder, exist_ok=True)
  width = max(6, len(str(len(images) - 1)))
  for i, image in enumerate(images):
    pixels = (np.clip(image, 0, 1) * 255).round().astype(np.uint8).reshape(image_shape[:2])
    Image.fromarray(pixels).save(os.path.join(folder, f"{i:0{width}d}.png"))


def encode(workdir: str, output: str, precision="8", *, split: str | None = None,
           input_dir: str | None = None, dataset: str | None = None, num_images: int = 0) -> bytes:
  """Encodes a dataset split or a folder of PNGs with the model of `workdir` into `output`."""
  from vae_jax.applications import compression  # pylint: disable=g-import-not-at-top
  from vae_jax.datasets import data  # pylint: disable=g-import-not-at-top
  from vae_jax.run import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  if not output or (split is None) == (input_dir is None):
    raise ValueError("encode needs --output and exactly one of --split or --input_dir.")
  if num_images < 0:
    raise ValueError(f"--num_images={num_images} must be ≥ 0; give the number of images to"
                     " encode, or 0 for all.")
  config, model, params = workdir_lib.load_trained(workdir)
  if input_dir:
    images = read_pngs(input_dir, model.input_shape)
  else:
    images = data.load_split(dataset or config.data.name, split,
                             data_dir=config.data.data_dir or None,
                             raw_data_dir=config.data.raw_data_dir or None).images
    if num_images:
      images = images[:num_images]
  blob = compression.compress(model, params, images, precision)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with open(output, "wb") as f:
    f.write(blob)
  print(f"{len(images)} images -> {output}: {len(blob)} bytes,"
        f" {len(blob) / len(images):.1f} bytes/image (raw {model.data_dim})")
  return blob


def decode(workdir: str, input_path: str, output_dir: str) -> np.ndarray:
  """Decodes the file `input_path` with the model of `workdir` into PNGs in `output_dir`."""
  from vae_jax.applications import compression  # pylint: disable=g-import-not-at-top
  from vae_jax.run import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  if not input_path or not output_dir:
    raise ValueError("decode needs --input and --output_dir.")
  _, model, params = workdir_lib.load_trained(workdir)
  with open(input_path, "rb") as f:
    blob = f.read()
  images = compression.decompress(model, params, blob)
  write_pngs(images, output_dir, model.input_shape)
  print(f"{input_path} -> {len(images)} PNGs in {output_dir}")
  return images


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so tests can import the module)."""
  flags.DEFINE_string("workdir", None, "Workdir of the trained model.")
  flags.DEFINE_string("split", None, "encode: a split (train, validation, test) to encode.")
  flags.DEFINE_string("dataset", None, "encode --split: dataset (default: the model's).")
  flags.DEFINE_integer("num_images", 0, "encode --split: first N images only (0 = all).")
  flags.DEFINE_string("input_dir", None, "encode: a folder of PNG images to encode.")
  flags.DEFINE_string("precision", "8", "encode: float32, float16 or bits (1-16).")
  flags.DEFINE_string("output", None, "encode: the file to write.")
  flags.DEFINE_string("input", None, "decode: the file to read.")
  flags.DEFINE_string("output_dir", None, "decode: folder for the PNGs.")
  flags.mark_flags_as_required(["workdir"])


def main(argv):
  args = flags.FLAGS
  with cli.one_line_errors():
    if len(argv) != 2 or argv[1] not in ("encode", "decode"):
      given = f" (got {' '.join(argv[1:])!r})" if len(argv) > 1 else ""
      raise ValueError(f"give one command, encode or decode{given}; e.g. python -m"
                       " experiments.compress encode --workdir=W --split=test --output=test.vaez")
    if argv[1] == "encode":
      encode(args.workdir, args.output, args.precision, split=args.split,
             input_dir=args.input_dir, dataset=args.dataset, num_images=args.num_images)
    else:
      decode(args.workdir, args.input, args.output_dir)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
