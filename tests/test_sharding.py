"""Data parallelism: N devices (and 2 processes) compute what 1 device computes.

The test process has already started JAX with one CPU device, so the multi-
device side runs in subprocesses of this file (`python tests/test_sharding.py
<mode> ...`, see `_worker`) with fake CPU devices (`chex.set_n_cpu_devices`);
the single-device reference is computed here, through the plain single-device
path (no mesh), and the two are compared.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from conftest import REPO, tiny_config
from vae_jax.inference import evaluation
from vae_jax.run import optimizers
from vae_jax.scale import sharding
from vae_jax.run import train
from vae_jax.run import training
from vae_jax.models import vae as vae_lib

# A two-layer model with a VampPrior: the step and the evaluation of every part, on 1 and 8 devices
# (the training-command test below runs the default one-layer model).
MODEL = vae_lib.VAE(hidden_widths=(16,), latent_dim=4, upper_latent_dims=(2,), upper_hidden_widths=(2,),
                    prior="vampprior", prior_components=4)
RUN = {"training__num_epochs": 1, "eval__num_examples": 100}   # one epoch of 16 steps, shortened eval


def _batches():
  return np.asarray(jax.random.uniform(jax.random.PRNGKey(7), (3, 32, 784)))


def _eval_images():
  return np.asarray(jax.random.uniform(jax.random.PRNGKey(8), (45, 784)))


def _tiny_step():
  from vae_jax import config as config_lib
  optimizer = optimizers.make_optimizer(config_lib.default_config().optimizer, 100)
  return optimizer, training.make_step_fn(MODEL, optimizer, objective="elbo")


def _run_worker(mode, out_dir, *args, devices=8, env=None, wait=True):
  env = dict(os.environ, VAE_JAX_TEST_CPU_DEVICES=str(devices),
             JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(REPO), *sys.path]), **(env or {}))
  command = [sys.executable, str(pathlib.Path(__file__)), mode, str(out_dir), *map(str, args)]
  process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
  return _finish(process) if wait else process


def _finish(process):
  output, _ = process.communicate(timeout=300)
  assert process.returncode == 0, output[-4000:]
  return output


def test_eight_devices_step_and_evaluation_equal_one_device(tmp_path):
  _run_worker("step", tmp_path)
  found = json.loads((tmp_path / "step.json").read_text())
  assert found["devices"] == 8
  # Outputs are laid out as asked: state and measurements replicated, the epoch split along B.
  assert found["state_replicated"] and found["measurements_replicated"]
  assert found["epoch_spec"] == [None, "data"] and found["epoch_shard_shape"] == [3, 4, 784]
  assert found["batch_error"].startswith("config.training.batch_size=100 does not split evenly over the 8")
  assert "\n" not in found["batch_error"]

  optimizer, step_fn = _tiny_step()
  state, measured = training.jit_train_steps(step_fn)(training.init_state(MODEL, optimizer, seed=0),
                                                      _batches())
  sharded = np.load(tmp_path / "step.npz")
  np.testing.assert_allclose(sharded["loss"], measured["loss"], rtol=1e-5)
  leaves = jax.tree_util.tree_leaves(state.params)
  assert len(leaves) == len([k for k in sharded if k.startswith("param")])
  for i, leaf in enumerate(leaves):
    np.testing.assert_allclose(sharded[f"param{i}"], leaf, rtol=1e-4, atol=1e-6)

  # Evaluation on 8 devices (45 examples, batches of 20 rounded up to 24) == 1 device.
  params = MODEL.init(jax.random.PRNGKey(3))
  reference = evaluation.evaluate(MODEL, params, _eval_images(), jax.random.PRNGKey(4),
                                  batch_size=20, num_samples=30, chunk_size=7)
  for name, value in reference.items():
    np.testing.assert_allclose(found["evaluation"][name], value, rtol=1e-5, err_msg=name)


def test_training_command_on_eight_devices_equals_one_device(raw_data, tfds_data_dir, tmp_path):
  _run_worker("train", tmp_path / "eight", raw_data, tfds_data_dir)
  reference = train.train_and_evaluate(tiny_config(raw_data, tfds_data_dir, **RUN), str(tmp_path / "one"))
  _assert_same_run(tmp_path / "eight", tmp_path / "one", reference)


@pytest.mark.slow
def test_two_processes_with_jax_distributed_equal_one_process(raw_data, tfds_data_dir, tmp_path):
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  processes = [
      _run_worker("train", tmp_path / "two", raw_data, tfds_data_dir, devices=2, wait=False,
                  env={"JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
                       "JAX_PROCESS_ID": str(i)})
      for i in range(2)]
  outputs = [_finish(p) for p in processes]
  assert all("process 0 of 2, 4 devices" in o or "process 1 of 2, 4 devices" in o for o in outputs)
  reference = train.train_and_evaluate(tiny_config(raw_data, tfds_data_dir, **RUN), str(tmp_path / "one"))
  _assert_same_run(tmp_path / "two", tmp_path / "one", reference)


def _assert_same_run(sharded_dir, reference_dir, reference):
  found = json.loads((sharded_dir / "results.json").read_text())
  for name in ("neg_elbo", "nll", "recon", "kl"):
    np.testing.assert_allclose(found[name], reference[name], rtol=1e-4, err_msg=name)
  read = lambda d: [json.loads(line) for line in open(d / "metrics.jsonl")]  # noqa: E731
  sharded, single = read(sharded_dir), read(reference_dir)
  # Only process 0 writes metrics: every record appears once, as in the 1-device run.
  assert [(r["step"], r["split"]) for r in sharded] == [(r["step"], r["split"]) for r in single]
  np.testing.assert_allclose([r["loss"] for r in sharded if r["split"] == "train"],
                             [r["loss"] for r in single if r["split"] == "train"], rtol=1e-4)


def test_put_epoch_on_one_device_is_epoch_batches():
  from vae_jax.datasets import data as data_lib
  images = np.asarray(jax.random.uniform(jax.random.PRNGKey(0), (70, 784)))
  mesh = sharding.make_mesh()
  put = sharding.put_epoch(images, 16, seed=3, epoch=2, mesh=mesh)
  np.testing.assert_array_equal(put, data_lib.epoch_batches(images, 16, 3, 2))
  assert put.sharding.is_equivalent_to(sharding.batch_sharding(mesh, 1), 3)
  assert sharding.process_rows(put.sharding, put.shape, batch_axis=1) == (0, 16)


@pytest.mark.parametrize("kwargs, missing", [
    ({"coordinator_address": "localhost:1234"}, "num_processes, process_id"),
    ({"num_processes": 2, "process_id": 0}, "coordinator_address"),
])
def test_incomplete_multihost_launch_is_a_one_line_error(monkeypatch, kwargs, missing):
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  with pytest.raises(ValueError, match=f"missing {missing};"):
    sharding.initialize_distributed(**kwargs)
  with pytest.raises(ValueError, match=r"process_id=2 must be in \[0, num_processes=2\)"):
    sharding.initialize_distributed("localhost:1234", 2, 2)
  assert sharding.initialize_distributed() is False     # nothing given: single process


def _worker(mode, out_dir, *args):
  """The multi-device side, run in a fresh process (see `_run_worker`)."""
  out_dir = pathlib.Path(out_dir)
  sharding.initialize_distributed()          # from JAX_COORDINATOR_ADDRESS etc., if set
  print(f"process {jax.process_index()} of {jax.process_count()}, {jax.device_count()} devices",
        flush=True)
  if mode == "train":
    raw_data, tfds_data_dir = args
    train.train_and_evaluate(tiny_config(raw_data, tfds_data_dir, **RUN), str(out_dir))
    return
  out_dir.mkdir(parents=True, exist_ok=True)
  mesh = sharding.make_mesh()
  optimizer, step_fn = _tiny_step()
  state = sharding.replicate(training.init_state(MODEL, optimizer, seed=0), mesh)
  batches = jax.device_put(_batches(), sharding.batch_sharding(mesh, batch_axis=1))
  state, measured = training.jit_train_steps(step_fn)(state, batches)
  replicated = sharding.replicated(mesh)
  is_replicated = lambda tree: all(  # noqa: E731
      leaf.sharding.is_equivalent_to(replicated, leaf.ndim) for leaf in jax.tree_util.tree_leaves(tree))
  epoch = sharding.put_epoch(_batches().reshape(96, 784), 32, seed=0, epoch=0, mesh=mesh)
  try:
    sharding.check_batch_size(100, mesh)
    batch_error = ""
  except ValueError as e:
    batch_error = str(e)
  params = MODEL.init(jax.random.PRNGKey(3))
  scores = evaluation.evaluate(MODEL, params, _eval_images(), jax.random.PRNGKey(4),
                               batch_size=20, num_samples=30, chunk_size=7, mesh=mesh)
  np.savez(out_dir / "step.npz", loss=np.asarray(measured["loss"]),
           **{f"param{i}": np.asarray(leaf) for i, leaf in enumerate(jax.tree_util.tree_leaves(state.params))})
  (out_dir / "step.json").write_text(json.dumps({
      "devices": jax.device_count(), "state_replicated": is_replicated(state),
      "measurements_replicated": is_replicated(measured),
      "epoch_spec": list(epoch.sharding.spec), "epoch_shard_shape": list(epoch.addressable_shards[0].data.shape),
      "batch_error": batch_error, "evaluation": scores}))


if __name__ == "__main__":
  chex.set_n_cpu_devices(int(os.environ["VAE_JAX_TEST_CPU_DEVICES"]))   # before JAX starts its backend
  _worker(*sys.argv[1:])
