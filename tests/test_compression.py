"""Compression: quantiser bound, round trip within the expected distortion, header checks, CLI."""
import math
import struct

from hypothesis import given, settings, strategies as st
import jax
import numpy as np
import pytest
from scipy import stats

from conftest import REPO, tiny_config
from vae_jax.applications import compression
from vae_jax.datasets import data
from vae_jax.run import train
from vae_jax.run import workdir


@pytest.fixture(scope="module")
def trained(raw_data, tfds_data_dir, tmp_path_factory):
  """A tiny MNIST VAE trained for 2 epochs, loaded back with `workdir.load_trained`."""
  path = str(tmp_path_factory.mktemp("compression_run"))
  train.train_and_evaluate(tiny_config(raw_data, tfds_data_dir, eval__is_num_samples=0), path)
  config, model, params = workdir.load_trained(path)
  images = data.load_split("mnist", "test", data_dir=tfds_data_dir, raw_data_dir=raw_data).images[:64]
  return path, model, params, images


@settings(max_examples=30, deadline=None)
@given(bits=st.integers(1, 16), seed=st.integers(0, 2**16))
def test_quantiser_stays_within_half_a_bin_of_prior_probability(bits, seed):
  z = np.random.default_rng(seed).normal(scale=2.0, size=(5, 7)).astype(np.float32)
  q = compression.quantize(z, bits)
  assert q.min() >= 0 and q.max() <= 2 ** bits - 1
  z_hat = compression.dequantize(q, bits)
  # |Φ(z) − Φ(ẑ)| ≤ 2^{-b-1}, Φ from scipy (independent of jax.scipy).
  gap = np.abs(stats.norm.cdf(z.astype(np.float64)) - stats.norm.cdf(z_hat.astype(np.float64)))
  assert gap.max() <= 2.0 ** (-bits - 1) + 1e-6
  np.testing.assert_array_equal(compression.quantize(z_hat, bits), q)  # bin centres map to their bin


@pytest.mark.parametrize("bits", [1, 3, 7, 8, 13, 16])
def test_latents_survive_the_bytes(bits):
  z = np.random.default_rng(bits).normal(size=(11, 5)).astype(np.float32)   # 55·b bits: not whole bytes
  blob = compression.encode_latents(z, bits, b"\x01" * 16)
  assert len(blob) == compression.HEADER_BYTES + math.ceil(11 * 5 * bits / 8)
  header, decoded = compression.decode_latents_bytes(blob, b"\x01" * 16)
  assert (header.num_images, header.latent_dim, header.precision) == (11, 5, str(bits))
  np.testing.assert_array_equal(decoded, compression.dequantize(compression.quantize(z, bits), bits))


def test_float_precisions_are_exact_to_their_dtype():
  z = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
  _, z32 = compression.decode_latents_bytes(compression.encode_latents(z, "float32", bytes(16)))
  np.testing.assert_array_equal(z32, z)
  _, z16 = compression.decode_latents_bytes(compression.encode_latents(z, "float16", bytes(16)))
  np.testing.assert_array_equal(z16, z.astype(np.float16).astype(np.float32))


def test_round_trip_is_within_the_expected_distortion(trained):
  _, model, params, images = trained
  reference = np.asarray(jax.vmap(model.reconstruct, in_axes=(None, 0))(params, images))
  exact = compression.decompress(model, params, compression.compress(model, params, images, "float32"))
  np.testing.assert_allclose(exact, reference, atol=1e-5)
  mse_exact = compression.distortion(images, exact)["mse"]
  eight = compression.decompress(model, params, compression.compress(model, params, images, 8))
  # 8 bits: the quantisation error adds < 2 % to the model's own distortion.
  assert compression.distortion(images, eight)["mse"] <= 1.02 * mse_exact
  assert compression.distortion(exact, eight)["mse"] < 0.05 * mse_exact
  one = compression.decompress(model, params, compression.compress(model, params, images, 1))
  assert compression.distortion(exact, one)["mse"] > compression.distortion(exact, eight)["mse"]
  d = compression.distortion(images, exact)
  assert d["psnr"] == pytest.approx(10 * np.log10(1 / d["mse"]))


def test_header_checks(trained):
  _, model, params, images = trained
  blob = compression.compress(model, params, images[:10], 4)
  header = compression.read_header(blob)
  assert header.model_id == compression.model_id(model, params)
  assert (header.version, header.precision, header.num_images, header.latent_dim) == (
      compression.FORMAT_VERSION, "4", 10, model.latent_dim)

  other = jax.tree_util.tree_map(lambda a: a + 1e-3, params)
  with pytest.raises(compression.FormatError, match="encoded by model"):
    compression.decompress(model, other, blob)
  with pytest.raises(compression.FormatError, match="truncated"):
    compression.decompress(model, params, blob[:-1])
  with pytest.raises(compression.FormatError, match="longer than"):
    compression.decompress(model, params, blob + b"\0")
  with pytest.raises(compression.FormatError, match="CRC"):
    compression.decompress(model, params, blob[:-1] + bytes([blob[-1] ^ 1]))
  text = (REPO / "README.md").read_bytes()[:200]
  for foreign in (b"", b"VAEZ", text, b"\x89PNG\r\n\x1a\n" + bytes(64)):
    with pytest.raises(compression.FormatError, match="not a vae_jax compressed file"):
      compression.decompress(model, params, foreign)
  newer = blob[:4] + bytes([compression.FORMAT_VERSION + 1]) + blob[5:]
  with pytest.raises(compression.FormatError, match="version"):
    compression.read_header(newer)
  bad_kind = blob[:5] + bytes([7]) + blob[6:]
  with pytest.raises(compression.FormatError, match="corrupt"):
    compression.read_header(bad_kind)
  assert struct.calcsize("<4sBBBB16sIII") == compression.HEADER_BYTES == 36


def test_model_id_tracks_spec_and_parameters(trained):
  import dataclasses
  _, model, params, _ = trained
  copy = jax.tree_util.tree_map(np.array, params)
  assert compression.model_id(model, copy) == compression.model_id(model, params)
  assert compression.model_id(dataclasses.replace(model, activation="tanh"), params) != \
      compression.model_id(model, params)


def test_bad_precision_and_shapes_are_one_line_errors(trained):
  _, model, params, images = trained
  for bad in (0, 17, "float8", "eight"):
    with pytest.raises(ValueError, match="precision"):
      compression.parse_precision(bad)
  with pytest.raises(ValueError, match=r"images must be \[N, 784\]"):
    compression.compress(model, params, images[:, :100])


def test_load_trained_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    workdir.load_trained(str(tmp_path))


def test_command_line_round_trip(trained, tmp_path, capsys):
  from experiments import cli, compress  # pylint: disable=g-import-not-at-top
  path, model, params, images = trained
  encoded, pngs = tmp_path / "test.vaez", tmp_path / "pngs"
  compress.encode(path, str(encoded), "6", split="test", num_images=12)
  compress.decode(path, str(encoded), str(pngs))
  decoded = compress.read_pngs(str(pngs), model.input_shape)
  expected = compression.decompress(model, params, encoded.read_bytes())
  np.testing.assert_allclose(decoded, expected, atol=0.5 / 255 + 1e-6)   # 8-bit PNG rounding
  assert len(decoded) == 12 and compression.distortion(images[:12], decoded)["mse"] < 0.2
  # A folder of PNGs encodes too (in sorted name order).
  blob = compress.encode(path, str(tmp_path / "pngs.vaez"), "float32", input_dir=str(pngs))
  assert compression.read_header(blob).num_images == 12

  (tmp_path / "short.vaez").write_bytes(encoded.read_bytes()[:-3])
  capsys.readouterr()
  with pytest.raises(SystemExit) as exit_info, cli.one_line_errors():
    compress.decode(path, str(tmp_path / "short.vaez"), str(tmp_path / "x"))
  err = capsys.readouterr().err
  assert exit_info.value.code == 1 and err.startswith("error: the file is truncated")
  assert len(err.strip().splitlines()) == 1
  with pytest.raises(ValueError, match="exactly one of --split or --input_dir"):
    compress.encode(path, str(encoded), "8")
