"""Image grids written as PNG (reconstructions, samples, interpolations)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image


def make_grid(images: np.ndarray, image_shape=(28, 28), ncols: int = 10, pad: int = 1) -> np.ndarray:
  """Tiles `images` [N, prod(image_shape)] with values in [0, 1] into one uint8 array."""
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0).reshape(-1, *image_shape[:2])
  n, (h, w) = len(images), image_shape[:2]
  ncols = min(ncols, n)
  nrows = -(-n // ncols)
  grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad), np.float32)
  for i, image in enumerate(images):
    r, c = divmod(i, ncols)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = image
  return (grid * 255).round().astype(np.uint8)


def save_grid(images: np.ndarray, path: str, image_shape=(28, 28), ncols: int = 10, scale: int = 2) -> str:
  """Writes `make_grid(images)` as a PNG (written to a temporary name, then renamed)."""
  grid = Image.fromarray(make_grid(images, image_shape, ncols))
  grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp.png"
  grid.save(tmp)
  os.replace(tmp, path)
  return path
