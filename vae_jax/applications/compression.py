"""Lossy image compression with a trained VAE: send the code, not the image.

Ch. 2 motivates the autoencoder g ∘ f by transmission: the sender computes the
code z = f(x) ∈ ℝ^d (here the posterior mean μ(x)), sends it, and the receiver
reconstructs x̂ = E[x | z] with the decoder. To send z it is quantised:

* "float32" / "float16": z as IEEE floats (4d or 2d bytes).
* b bits per dimension (1 ≤ b ≤ 16): each coordinate is quantised uniformly in
  the CDF of the prior N(0, 1), where the codes of a VAE live:

      u = Φ(z_j),   q = min(⌊2^b u⌋, 2^b − 1),   ẑ_j = Φ⁻¹((q + ½) / 2^b),

  so every one of the 2^b bins has prior probability 2^{-b} and
  |Φ(z_j) − Φ(ẑ_j)| ≤ 2^{-b-1}. The N·d·b bits of N images are packed
  into ⌈N·d·b / 8⌉ bytes (d·b/8 bytes per image). No per-file table is
  needed: the quantiser is fixed.

File format (little-endian; no pickle), version `FORMAT_VERSION`:

    offset  size  field
    0       4     magic b"VAEZ"
    4       1     format version
    5       1     kind: 0 quantised, 1 float16, 2 float32
    6       1     bits per dimension (kind 0), else 0
    7       1     reserved (0)
    8       16    model id: SHA-256 of the model spec and the parameters' digest
    24      4     number of images N
    28      4     latent dimension d
    32      4     CRC-32 of the payload
    36      …     payload: ⌈N·d·b/8⌉ bytes of packed bin indices, most
                  significant bit first (kind 0), or N·d floats

Decoding checks each field and raises `FormatError` (a ValueError) with a
one-line message for a foreign file, a newer version, another model, a
truncated or corrupt payload.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import struct
import zlib
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.run import checkpoints
from vae_jax.datasets import data as data_lib
from vae_jax.models import vae as vae_lib

MAGIC = b"VAEZ"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sBBBB16sIII")
HEADER_BYTES = _HEADER.size
_KINDS = {0: "bits", 1: "float16", 2: "float32"}
MAX_BITS = 16


class FormatError(ValueError):
  """A compressed file cannot be decoded (foreign, newer, other model, truncated)."""


class Header(NamedTuple):
  """The fields of a compressed file's header."""
  version: int
  precision: str        # "float16", "float32" or the number of bits, e.g. "8"
  model_id: bytes       # 16 bytes
  num_images: int
  latent_dim: int
  crc32: int


def parse_precision(precision) -> str:
  """Normalises a precision: "float16", "float32", or bits 1..16 (int or digit string)."""
  text = str(precision).strip().lower()
  if text in ("float16", "float32"):
    return text
  if text.isdigit() and 1 <= int(text) <= MAX_BITS:
    return str(int(text))
  raise ValueError(f"precision={precision!r} is invalid; use float16, float32 or a number of"
                   f" bits per latent dimension from 1 to {MAX_BITS}.")


def bits_per_image(latent_dim: int, precision) -> int:
  """Bits of one image's code: 32d, 16d or d·b."""
  precision = parse_precision(precision)
  bits = {"float16": 16, "float32": 32}.get(precision)
  return latent_dim * (bits if bits else int(precision))


def payload_bytes(num_images: int, latent_dim: int, precision) -> int:
  """Bytes of the payload of N codes: ⌈N · bits_per_image / 8⌉."""
  return -(-num_images * bits_per_image(latent_dim, precision) // 8)


def model_id(model: vae_lib.VAE, params) -> bytes:
  """16 bytes identifying a trained model: SHA-256(spec ‖ parameter digest)."""
  spec = json.dumps(dataclasses.asdict(model), sort_keys=True, default=str)
  digest = checkpoints.state_digest(params)
  return hashlib.sha256(spec.encode() + digest.encode()).digest()[:16]


# -- the code of an image and the image of a code ----------------------------

@functools.partial(jax.jit, static_argnums=0)
def _codes(model, params, batch):
  return jax.vmap(model.code, in_axes=(None, 0))(params, batch)


@functools.partial(jax.jit, static_argnums=0)
def _means(model, params, z):
  return jax.vmap(lambda z_i: model.mean(params, model.decode(params, z_i)))(z)


def _batched(fn, model, params, array, batch_size: int) -> np.ndarray:
  array = np.asarray(array, np.float32)
  parts = [np.asarray(fn(model, params, jnp.asarray(array[i:i + batch_size])))
           for i in range(0, len(array), batch_size)]
  return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def latent_means(model: vae_lib.VAE, params, images, batch_size: int = 1000) -> np.ndarray:
  """The codes μ(x) (or f(x) for the deterministic AE) of images [N, D] → [N, d]."""
  chex.assert_shape(images, (None, model.data_dim))
  return _batched(_codes, model, params, images, batch_size).reshape(-1, model.latent_dim)


def decode_latents(model: vae_lib.VAE, params, z, batch_size: int = 1000) -> np.ndarray:
  """The images E[x | z] of latents [N, d] → [N, D] in [0, 1]."""
  chex.assert_shape(z, (None, model.latent_dim))
  return _batched(_means, model, params, z, batch_size).reshape(-1, model.data_dim)


# -- quantisation -------------------------------------------------------------

def quantize(z, bits: int) -> np.ndarray:
  """Bin indices q = min(⌊2^b Φ(z)⌋, 2^b − 1) ∈ {0, …, 2^b − 1}, as uint32."""
  levels = 2 ** bits
  u = np.asarray(jax.scipy.special.ndtr(jnp.asarray(z, jnp.float32)), np.float64)
  return np.clip(np.floor(u * levels), 0, levels - 1).astype(np.uint32)


def dequantize(q, bits: int) -> np.ndarray:
  """Bin centres ẑ = Φ⁻¹((q + ½) / 2^b), float32."""
  u = (np.asarray(q, np.float64) + 0.5) / 2 ** bits
  return np.asarray(jax.scipy.special.ndtri(jnp.asarray(u, jnp.float32)), np.float32)


def _pack(q: np.ndarray, bits: int) -> bytes:
  shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
  planes = ((q[..., None] >> shifts) & 1).astype(np.uint8)          # [N, d, b]
  return np.packbits(planes.reshape(-1)).tobytes()


def _unpack(payload: bytes, num_images: int, latent_dim: int, bits: int) -> np.ndarray:
  stream = np.frombuffer(payload, np.uint8)
  planes = np.unpackbits(stream, count=num_images * latent_dim * bits).reshape(
      num_images, latent_dim, bits)
  shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
  return (planes.astype(np.uint32) << shifts).sum(axis=-1, dtype=np.uint32)


# -- bytes ---------------------------------------------------------------------

def encode_latents(z, precision, identity: bytes) -> bytes:
  """Serialises latents [N, d] at `precision` behind a header carrying `identity`."""
  precision = parse_precision(precision)
  z = np.asarray(z, np.float32)
  if z.ndim != 2:
    raise ValueError(f"latents must be [N, d], got shape {z.shape}.")
  if precision.startswith("float"):
    kind, bits = (1, 0) if precision == "float16" else (2, 0)
    payload = z.astype("<f2" if kind == 1 else "<f4").tobytes()
  else:
    kind, bits = 0, int(precision)
    payload = _pack(quantize(z, bits), bits)
  header = _HEADER.pack(MAGIC, FORMAT_VERSION, kind, bits, 0, identity, z.shape[0], z.shape[1],
                        zlib.crc32(payload))
  return header + payload


def read_header(blob: bytes) -> Header:
  """Parses and checks the header of a compressed file (not the payload)."""
  if len(blob) < HEADER_BYTES or blob[:4] != MAGIC:
    raise FormatError(f"not a vae_jax compressed file (it does not start with {MAGIC!r});"
                      " give a file written by experiments.compress encode.")
  magic, version, kind, bits, _, identity, num_images, latent_dim, crc = _HEADER.unpack(
      blob[:HEADER_BYTES])
  del magic
  if version != FORMAT_VERSION:
    raise FormatError(f"format version {version} is not supported (this vae_jax reads version"
                      f" {FORMAT_VERSION}); decode it with the vae_jax version that wrote it.")
  if kind not in _KINDS or (kind == 0) != (1 <= bits <= MAX_BITS):
    raise FormatError(f"the header is corrupt (kind={kind}, bits={bits}); the file is damaged.")
  precision = _KINDS[kind] if kind else str(bits)
  return Header(version, precision, identity, num_images, latent_dim, crc)


def decode_latents_bytes(blob: bytes, expected_id: bytes | None = None) -> tuple[Header, np.ndarray]:
  """(header, latents [N, d] float32) of a compressed file; checks model, length and CRC."""
  header = read_header(blob)
  if expected_id is not None and header.model_id != expected_id:
    raise FormatError(f"the file was encoded by model {header.model_id.hex()}, not by this"
                      f" model ({expected_id.hex()}); decode it with the workdir that encoded it.")
  expected = payload_bytes(header.num_images, header.latent_dim, header.precision)
  payload = blob[HEADER_BYTES:]
  if len(payload) != expected:
    what = "truncated" if len(payload) < expected else "longer than its header says"
    raise FormatError(f"the file is {what}: {header.num_images} codes need {expected} payload"
                      f" bytes, found {len(payload)}; re-send or re-encode it.")
  if zlib.crc32(payload) != header.crc32:
    raise FormatError("the payload is corrupt (CRC-32 mismatch); re-send or re-encode the file.")
  n, d = header.num_images, header.latent_dim
  if header.precision.startswith("float"):
    z = np.frombuffer(payload, "<f2" if header.precision == "float16" else "<f4").reshape(n, d)
    return header, z.astype(np.float32)
  bits = int(header.precision)
  return header, dequantize(_unpack(payload, n, d, bits), bits)


def compress(model: vae_lib.VAE, params, images, precision="8", batch_size: int = 1000) -> bytes:
  """Images [N, D] in [0, 1] → the bytes of their quantised codes."""
  images = np.asarray(images, np.float32)
  if images.ndim != 2 or images.shape[1] != model.data_dim:
    raise ValueError(f"images must be [N, {model.data_dim}] in [0, 1], got shape {images.shape}.")
  data_lib.check_images(images, model.data_dim)  # finite, in [0, 1]
  codes = latent_means(model, params, images, batch_size)
  chex.assert_tree_all_finite(codes)   # a diverged model's NaN codes are never written
  return encode_latents(codes, precision, model_id(model, params))


def decompress(model: vae_lib.VAE, params, blob: bytes, batch_size: int = 1000) -> np.ndarray:
  """The bytes of `compress` → reconstructions E[x | ẑ], [N, D] in [0, 1]."""
  header, z = decode_latents_bytes(blob, model_id(model, params))
  if header.latent_dim != model.latent_dim:
    raise FormatError(f"the file holds {header.latent_dim}-dimensional codes but the model's"
                      f" latent_dim is {model.latent_dim}; use the model that encoded it.")
  return decode_latents(model, params, z, batch_size)


def distortion(images, reconstructions) -> dict:
  """MSE = mean (x − x̂)² over pixels and images, PSNR = 10 log₁₀(1 / MSE) dB (peak 1)."""
  diff = np.asarray(images, np.float64) - np.asarray(reconstructions, np.float64)
  mse = float(np.mean(diff ** 2))
  return {"mse": mse, "psnr": float(10 * np.log10(1.0 / mse)) if mse > 0 else float("inf")}
