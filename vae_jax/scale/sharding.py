"""Data parallelism with `jax.sharding`: one jitted step on 1 or N devices, 1 or N hosts.

All devices of all processes form a one-axis `Mesh` with axis "data". A
batch is split along that axis (device i of n holds examples
[i·B/n, (i+1)·B/n) of the global batch of B) and the parameters and optimizer
state are replicated, so the gradient of the mean loss,

    ∇θ (1/B) Σ_{b=1}^{B} ℓ(θ, x_b) = (1/n) Σ_i ∇θ (1/(B/n)) Σ_{b ∈ shard i} ℓ(θ, x_b),

is the same whatever n is; `jax.jit` sees the input shardings and inserts the
all-reduce itself. There is no separate multi-device code path: with one
device the mesh has size 1 and the program is the single-device one.

Multi-host (several processes, each with its own devices) uses
`jax.distributed.initialize` (`initialize_distributed`). Every process runs
the same program on the same global arrays; each host builds only its own
rows of each global batch (`put_epoch`), and only process 0 writes files
(metrics, figures, results; orbax coordinates the checkpoints itself).
"""

from __future__ import annotations

import os
from typing import Any

import chex
import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

from vae_jax.datasets import data as data_lib

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  """A one-axis mesh ("data",) over `devices` (default: every device of every process)."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (parameters, optimizer state, scalars)."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
  """Axis `batch_axis` is split over the "data" axis, the others are whole.

  `batch_axis=0` for a batch [B, D]; `batch_axis=1` for a block of batches
  [steps, B, D] consumed by `lax.scan`.
  """
  return NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, field: str = "training.batch_size") -> None:
  """Raises a one-line ValueError unless the global batch splits evenly over the devices."""
  devices = mesh.devices.size
  if batch_size % devices:
    multiple = -(-batch_size // devices) * devices
    raise ValueError(
        f"config.{field}={batch_size} does not split evenly over the {devices} devices;"
        f" use a multiple of {devices} (e.g. {multiple}) or run on fewer devices.")


def replicate(tree: Any, mesh: Mesh) -> Any:
  """`tree` (the same values on every process) replicated on every device of the mesh."""
  return jax.device_put(tree, replicated(mesh))


def process_rows(sharding: NamedSharding, global_shape: tuple, batch_axis: int) -> tuple[int, int]:
  """The rows [lo, hi) of axis `batch_axis` that this process's devices hold."""
  indices = sharding.addressable_devices_indices_map(tuple(global_shape)).values()
  spans = sorted({index[batch_axis].indices(global_shape[batch_axis])[:2] for index in indices})
  if any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
    raise ValueError(f"this process's devices hold non-contiguous rows {spans};"
                     " order the mesh's devices by process (the default of make_mesh).")
  return spans[0][0], spans[-1][1]


def put_epoch(images: np.ndarray, batch_size: int, seed: int, epoch: int, mesh: Mesh) -> jax.Array:
  """Epoch `epoch` as one global array [steps, B, D], sharded along B (axis 1).

  The example order is `data.epoch_permutation(seed, epoch)` cut into full
  batches, exactly as `data.epoch_batches`; each process gathers only the rows
  its own devices hold, so host memory per epoch is 1/(number of processes).
  """
  check_batch_size(batch_size, mesh)
  images = np.asarray(images)
  steps = data_lib.num_batches(len(images), batch_size)
  order = data_lib.epoch_permutation(seed, epoch, len(images))[:steps * batch_size]
  order = order.reshape(steps, batch_size)                       # [steps, B] example numbers
  global_shape = (steps, batch_size) + images.shape[1:]
  sharding = batch_sharding(mesh, batch_axis=1)
  lo, hi = process_rows(sharding, global_shape, batch_axis=1)
  return jax.make_array_from_process_local_data(sharding, images[order[:, lo:hi]], global_shape)


def put_batch(batch: np.ndarray, mesh: Mesh) -> jax.Array:
  """A batch [B, ...] that every process holds whole, sharded along B over the mesh."""
  batch = np.asarray(batch)
  chex.assert_equal(batch.shape[0] % mesh.devices.size, 0)   # every device gets B/n rows
  return jax.make_array_from_callback(batch.shape, batch_sharding(mesh), lambda index: batch[index])


def to_host(x: jax.Array) -> np.ndarray:
  """The whole of a (possibly multi-host) array as NumPy, on every process."""
  if getattr(x, "is_fully_addressable", True) or x.is_fully_replicated:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def host_copy(tree: Any) -> Any:
  """NumPy copies of replicated arrays, read locally (for work one process does alone)."""
  return jax.tree_util.tree_map(to_host, tree)


def initialize_distributed(coordinator_address: str = "", num_processes: int = 0,
                           process_id: int = -1, autodetect: bool = False) -> bool:
  """Starts `jax.distributed` for a multi-host run; returns whether it did.

  Must run before any other JAX call. Empty arguments fall back to the
  environment variables JAX_COORDINATOR_ADDRESS (host:port of process 0),
  JAX_NUM_PROCESSES and JAX_PROCESS_ID. With none of the three set the run
  is single-process, unless `autodetect` asks JAX to read them from the
  cluster (Cloud TPU pod slices, Slurm, Open MPI).

  Raises:
    ValueError: some but not all of the three are given, or they are inconsistent.
  """
  address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
  count = num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "0") or 0)
  index = process_id if process_id >= 0 else int(os.environ.get("JAX_PROCESS_ID", "-1") or -1)
  given = {"coordinator_address": bool(address), "num_processes": count > 0, "process_id": index >= 0}
  if not any(given.values()):
    if autodetect:
      jax.distributed.initialize()
    return autodetect
  if not all(given.values()):
    missing = ", ".join(name for name, ok in given.items() if not ok)
    raise ValueError(f"multi-host launch is missing {missing}; give --coordinator_address,"
                     " --num_processes and --process_id (or JAX_COORDINATOR_ADDRESS,"
                     " JAX_NUM_PROCESSES, JAX_PROCESS_ID) together.")
  if not index < count:
    raise ValueError(f"process_id={index} must be in [0, num_processes={count}); number the"
                     " processes 0, 1, …, num_processes − 1.")
  jax.distributed.initialize(address, count, index)
  return True
