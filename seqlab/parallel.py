"""Where a run's arrays live: one `data` mesh axis over the devices of the run.

One run trains on every device it sees: all local devices, and in a multi-host
run (`jax.distributed`) all devices of all processes. Parameters, optimizer
state, the step and the PRNG key are replicated; the batch and the carried
recurrent state are split along the batch axis. The train step is the same
pure function as on one device, jitted with these shardings: XLA (GSPMD) adds
the all-reduce of the gradients. Each process builds only its own rows of
every batch (`local_rows`), so hosts never ship data to each other.
"""

import os

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from seqlab import steps
from seqlab.errors import SeqlabError

DATA_AXIS = 'data'


def initialize_distributed(parallel_config) -> bool:
  """Starts `jax.distributed` for a multi-host run; returns True if it did.

  It starts when `parallel.coordinator_address` or $JAX_COORDINATOR_ADDRESS is
  set (with the process count and id from the config or $JAX_NUM_PROCESSES /
  $JAX_PROCESS_ID), or when `parallel.distributed` is True, where JAX detects
  SLURM, Open MPI, Kubernetes and Cloud TPU itself. Call it before anything
  else touches JAX devices. On CPU the processes talk over gloo (TCP).
  """
  address = parallel_config.coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS')
  if not (address or parallel_config.distributed):
    return False

  def from_env(value, name):
    if value is None and os.environ.get(name):
      return int(os.environ[name])
    return value

  num_processes = from_env(parallel_config.num_processes, 'JAX_NUM_PROCESSES')
  process_id = from_env(parallel_config.process_id, 'JAX_PROCESS_ID')
  try:
    jax.distributed.initialize(address, num_processes, process_id)
  except (RuntimeError, ValueError) as e:
    hint = ('; set --config.parallel.num_processes and --config.parallel.process_id (or '
            '$JAX_NUM_PROCESSES and $JAX_PROCESS_ID) on every process'
            if None in (num_processes, process_id) else '')
    raise SeqlabError(f'jax.distributed.initialize failed: {str(e).splitlines()[0]}{hint}') \
        from None
  return True


def use_cpu_devices(count: int) -> None:
  """Splits the host CPU into `count` JAX devices (0: JAX's default); call before any JAX op.

  One run then splits its batch over them as over GPUs, each device's
  computation on its own thread. On a CPU this pays for small models: a step of
  a small LSTM is a chain of small ops, one after another, that a single device
  runs on about one core. The README's "Performance" section has the numbers.
  It does not change the default platform: with GPUs present, runs use them.
  """
  if count < 0:
    raise SeqlabError(f'parallel.cpu_devices must be >= 0 (0: JAX\'s default), got {count}')
  if count:
    try:
      jax.config.update('jax_num_cpu_devices', count)
    except RuntimeError:
      raise SeqlabError('parallel.cpu_devices must be set before JAX starts; it was set after '
                        'something used a JAX device') from None


def is_multiprocess() -> bool:
  return jax.process_count() > 1


def is_primary() -> bool:
  """Process 0 writes the run directory's logs, samples and results (checkpoints: all)."""
  return jax.process_index() == 0


class Placement:
  """The mesh of a run and how each kind of array is laid out on it."""

  def __init__(self, num_devices: int = 0):
    devices = jax.devices()
    if num_devices < 0 or num_devices > len(devices):
      raise SeqlabError(f'parallel.num_devices={num_devices}, but there are {len(devices)} '
                        'devices; use 0 (all) or a number up to that')
    if num_devices and num_devices != len(devices) and jax.process_count() > 1:
      raise SeqlabError('a multi-host run uses every device of every process; set '
                        'parallel.num_devices=0')
    self.devices = devices[:num_devices or len(devices)]
    self.mesh = jax.sharding.Mesh(np.array(self.devices), (DATA_AXIS,))
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_split = NamedSharding(self.mesh, P(DATA_AXIS))

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  def describe(self) -> str:
    kind = self.devices[0].platform
    text = f'{self.num_devices} {kind} device{"s" if self.num_devices > 1 else ""}'
    return text + (f' in {jax.process_count()} processes' if jax.process_count() > 1 else '')

  def check_batch_size(self, batch_size: int) -> None:
    if batch_size % self.num_devices:
      knob = 'parallel.cpu_devices' if self.devices[0].platform == 'cpu' else \
          'parallel.num_devices'
      raise SeqlabError(f'data.batch_size={batch_size} does not divide by the '
                        f'{self.num_devices} devices of the run; use a multiple of '
                        f'{self.num_devices} or set {knob}')

  def state_shardings(self, state: steps.TrainState) -> steps.TrainState:
    """Everything replicated except the carried state, which is split like the batch."""
    replicate = lambda tree: jax.tree.map(lambda _: self.replicated, tree)
    return steps.TrainState(step=self.replicated, params=replicate(state.params),
                            opt_state=replicate(state.opt_state),
                            carry=jax.tree.map(lambda _: self.batch_split, state.carry),
                            rng=self.replicated)

  def put(self, tree, shardings):
    """Host (or single-device) values, the same in every process -> global arrays."""
    def put_leaf(x, sharding):
      x = np.asarray(x)
      return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
    return jax.tree.map(put_leaf, tree, shardings)

  def put_state(self, state: steps.TrainState) -> steps.TrainState:
    return self.put(state, self.state_shardings(state))

  def local_rows(self, batch_size: int) -> slice:
    """The rows of a global batch that this process's devices hold (all of them, in one process)."""
    index_map = self.batch_split.addressable_devices_indices_map((batch_size,))
    starts = [index[0].start or 0 for index in index_map.values()]
    stops = [batch_size if index[0].stop is None else index[0].stop
             for index in index_map.values()]
    if max(stops) - min(starts) != sum(b - a for a, b in zip(starts, stops)):
      raise SeqlabError('the devices of this process do not hold contiguous rows of the batch')
    return slice(min(starts), max(stops))

  def put_batch(self, local_rows_BxT: np.ndarray, batch_size: int) -> jax.Array:
    """This process's rows of a batch -> the global batch, split along the data axis."""
    global_shape = (batch_size, *local_rows_BxT.shape[1:])
    return jax.make_array_from_process_local_data(self.batch_split, local_rows_BxT, global_shape)

  def eval_sharding(self, num_streams: int) -> NamedSharding:
    """Evaluation streams are split over the devices when they divide evenly, else replicated."""
    return self.batch_split if num_streams % self.num_devices == 0 else self.replicated
