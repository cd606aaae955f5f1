"""Where a run's arrays live: one `data` mesh axis over the devices of the run.

One run trains on every device it sees: all local devices, and in a multi-host
run (`jax.distributed`) all devices of all processes. Parameters, optimizer
state, the step and the PRNG key are replicated; the batch and the carried
recurrent state are split along the batch axis. The train step is the same
pure function as on one device, jitted with these shardings: XLA (GSPMD) adds
the all-reduce of the gradients. Each process builds only its own rows of
every batch (`local_rows`), so hosts never ship data to each other.
"""

import glob
import importlib.metadata
import importlib.util
import os
import pathlib
import pkgutil

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


def has_accelerator() -> bool:
  """Whether JAX will likely find a GPU or TPU here, judged without starting JAX.

  $JAX_PLATFORMS (or jax_platforms) decides if set. Otherwise an accelerator needs
  both a JAX plugin (jax-cuda/rocm plugins, libtpu) and the hardware: a visible
  NVIDIA GPU (/dev/nvidia*, /proc/driver/nvidia/gpus, $CUDA_VISIBLE_DEVICES not
  empty), AMD's /dev/kfd, or a Google TPU on the PCI bus. A wrong answer only
  costs speed: CPU devices are never used while JAX has an accelerator.
  """
  platforms = _jax_platforms()
  if platforms:
    return any(p.strip() not in ('', 'cpu') for p in platforms.split(','))
  plugins = {e.name for e in importlib.metadata.entry_points(group='jax_plugins')}
  namespace = importlib.util.find_spec('jax_plugins')
  if namespace is not None and namespace.submodule_search_locations:
    plugins |= {m.name for m in pkgutil.iter_modules(namespace.submodule_search_locations)}
  if importlib.util.find_spec('libtpu') is not None:
    plugins.add('tpu')
  if not plugins:
    return False
  listed = os.environ.get('CUDA_VISIBLE_DEVICES')
  nvidia = (any(os.path.exists(d) for d in ('/dev/nvidia0', '/dev/nvidiactl', '/dev/dxg')) or
            (os.path.isdir('/proc/driver/nvidia/gpus') and os.listdir('/proc/driver/nvidia/gpus')))
  if listed is not None:
    nvidia = nvidia and any(d.strip() not in ('', '-1') for d in listed.split(','))
  return bool(nvidia or os.path.exists('/dev/kfd') or _google_pci_device())


def _google_pci_device() -> bool:
  """A device of Google's PCI vendor id (a TPU), as JAX itself looks for one."""
  for vendor in glob.glob('/sys/bus/pci/devices/*/vendor'):
    try:
      if pathlib.Path(vendor).read_text(encoding='ascii').strip() == '0x1ae0':
        return True
    except OSError:
      pass
  return False


def _jax_platforms() -> str:
  return jax.config.jax_platforms or os.environ.get('JAX_PLATFORMS', '')


def _forced_host_devices() -> bool:
  return 'xla_force_host_platform_device_count' in os.environ.get('XLA_FLAGS', '')


def cpu_device_count(parallel_config, batch_size: int) -> int:
  """The CPU devices a run asks for (0: leave JAX's default, one), JAX not started.

  `parallel.cpu_devices` N >= 1 is exactly N. 0 (the default) is one device per
  core this process may use (its CPU affinity: a sweep's trial gets its share),
  on a host without an accelerator (`has_accelerator`), lowered to the largest
  count that divides `batch_size` (so 0 never turns into a batch-size error);
  JAX's default where XLA_FLAGS already forces a device count, in a multi-host
  run, and with an accelerator.
  """
  count = parallel_config.get('cpu_devices', 0)
  if count < 0:
    raise SeqlabError('parallel.cpu_devices must be >= 0 (0: one per core on a host without '
                      f'an accelerator), got {count}')
  if count:
    return count
  multihost = (parallel_config.get('coordinator_address') or
               os.environ.get('JAX_COORDINATOR_ADDRESS') or parallel_config.get('distributed'))
  if multihost or _forced_host_devices() or batch_size < 1 or has_accelerator():
    return 0
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  count = max(n for n in range(1, (cores or 1) + 1) if batch_size % n == 0)
  return count if count > 1 else 0  # one device: JAX's default, nothing to set


def use_cpu_devices(config_or_count) -> int:
  """Splits the host CPU into JAX devices; call before any JAX op. Returns the count set (0: none).

  Given a run's config: `cpu_device_count(config.parallel, config.data.batch_size)`.
  Given a number (the bench): exactly that many, 0 leaving JAX's default.
  One run then splits its batch over them as over GPUs, each device's
  computation on its own thread. On a CPU this pays for small models: a step of
  a small LSTM is a chain of small ops, one after another, that a single device
  runs on about one core (docs/design.md has the numbers). It does not change
  the default platform: with GPUs present, runs use them.
  """
  if isinstance(config_or_count, int):
    count = config_or_count
    if count < 0:
      raise SeqlabError(f'parallel.cpu_devices must be >= 0 (0: JAX\'s default), got {count}')
  else:
    count = cpu_device_count(config_or_count.parallel, config_or_count.data.batch_size)
  if count:
    try:
      jax.config.update('jax_num_cpu_devices', count)
    except RuntimeError:
      raise SeqlabError('parallel.cpu_devices must be set before JAX starts; it was set after '
                        'something used a JAX device') from None
    if count > 1:
      patient_cpu_collectives()
  return count


# XLA:CPU aborts a process (SIGABRT) when one device's thread reaches an all-reduce more than
# 40 s after the others. On a loaded host (other jobs on the same cores) a split run hit that
# twice in one 4,900-step :cpu training; the threads were slow, not stuck. Wait 30 minutes.
CPU_COLLECTIVE_TIMEOUT_FLAGS = {'xla_cpu_collective_call_terminate_timeout_seconds': 1800,
                                'xla_cpu_collective_call_warn_stuck_timeout_seconds': 300}


def patient_cpu_collectives() -> None:
  """Adds CPU_COLLECTIVE_TIMEOUT_FLAGS to $XLA_FLAGS (unless set there); before JAX starts."""
  flags = os.environ.get('XLA_FLAGS', '')
  extra = [f'--{name}={value}' for name, value in CPU_COLLECTIVE_TIMEOUT_FLAGS.items()
           if f'--{name}=' not in flags]
  if extra:
    os.environ['XLA_FLAGS'] = ' '.join([flags, *extra]).strip()


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
