"""The bench worker's measurements of JAX and seqlab (`seqlab.bench.worker` runs one per process).

`matmul` (the matmul ceiling), `bandwidth` (memory bandwidth), `train` (seqlab's train step,
any registered model) and `sample` (seqlab's sampler); `build_step` is the compiled train step
they time (experiments/performance/zoo_profile.py times it too) and `stub_model_scans` the
`--stub_scans` profile's patch. The model of a measurement is a config's model group (a zoo
row: any model of `seqlab.models.registry`) or the default model's cell, layers and width
(the LSTM rows). JAX is imported where a measurement runs, not at import.
"""

import time

import numpy as np

from seqlab.bench.timing import CLIP, LEARNING_RATE, VOCAB, median_time, peak_rss_mib
from seqlab.models import registry  # no JAX until a model is looked up


def device_peak_mib() -> float | None:
  """Peak accelerator memory of this process (None on CPU, where peak RSS covers it)."""
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  stats = device.memory_stats() if device.platform != 'cpu' else None
  return stats['peak_bytes_in_use'] / 2 ** 20 if stats and 'peak_bytes_in_use' in stats else None


def matmul(size: int = 2048, repeats: int = 10, dtype: str = 'float32') -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jax.random.normal(jax.random.PRNGKey(0), (size, size), dtype)
  b = jax.random.normal(jax.random.PRNGKey(1), (size, size), dtype)
  dot = jax.jit(jnp.dot)
  jax.block_until_ready(dot(a, b))
  seconds = median_time(lambda: jax.block_until_ready(dot(a, b)), repeats)
  return {'gflops': 2 * size ** 3 / seconds / 1e9, 'size': size}


def bandwidth(mib: int = 256, repeats: int = 10) -> dict:
  """Memory bandwidth as JAX sees it: x <- 0.5 x over `mib` MiB of float32, read and written in
  place (donated), the access pattern of an elementwise op too large for the caches (the bound
  of a memory-bound model's scan: `registry.Model.memory_bound`); under the train worker's
  malloc settings. `new_buffer_gbytes_per_s`: the same op into a fresh buffer each time (what
  an op that allocates its output pays)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  x = jnp.ones((mib * 2 ** 18,), jnp.float32)
  nbytes = x.nbytes
  in_place = jax.jit(lambda x: x * 0.5, donate_argnums=0)
  fresh = jax.jit(lambda x: x * 0.5)

  def step():
    nonlocal x
    x = jax.block_until_ready(in_place(x))
  step()
  seconds = median_time(step, repeats)
  jax.block_until_ready(fresh(x))
  fresh_seconds = median_time(lambda: jax.block_until_ready(fresh(x)), repeats)
  return {'gbytes_per_s': 2 * nbytes / seconds / 1e9,
          'new_buffer_gbytes_per_s': 2 * nbytes / fresh_seconds / 1e9, 'mib': mib}


def model_config(cell=None, num_layers=None, hidden_size=None, model=None, **fields):
  """The model a measurement runs: `model`, a config's model group (any registered model,
  e.g. a zoo row's `zoo.group`), or else the default model's (`registry.DEFAULT`) cell, layers
  and hidden size of the LSTM rows, with extra model `fields`."""
  if model is not None:
    return registry.config_of({**model, **fields}, VOCAB)
  return registry.config_of(dict(name=registry.DEFAULT, cell=cell, num_layers=num_layers,
                                 hidden_size=hidden_size, **fields), VOCAB)


def stub_model_scans() -> None:
  """Replaces every registered model's time loop by elementwise work without the loop (same
  inputs and output shapes, every input still in the gradient): each model's declared
  `stub_scans` (`registry.Model`). A profile of what a model costs without its scan: the
  numbers it trains are not the model's. It lasts for the rest of the process."""
  for name in registry.names():
    patch = registry.get(name).stub_scans
    if patch is not None:
      patch()


def build_step(config, placement, batch: int, seq_len: int, num_steps: int):
  """seqlab's train step for `config` on `placement`'s devices, compiled, with its state and a
  random batch: (one_step() running a step to the end, compile seconds, the params)."""
  import jax  # pylint: disable=g-import-not-at-top
  from ml_collections import config_dict  # pylint: disable=g-import-not-at-top
  from seqlab import steps as steps_lib  # pylint: disable=g-import-not-at-top
  from seqlab import optim  # pylint: disable=g-import-not-at-top
  # The optimizer training builds (seqlab.optim), with the peer's settings: Adam, clip 5.
  optim_config = config_dict.ConfigDict(dict(
      name='adam', learning_rate=LEARNING_RATE, b1=0.9, b2=0.999, weight_decay=0.0,
      grad_clip=CLIP, schedule='constant', warmup_steps=0))
  schedule = optim.make_schedule(optim_config, num_steps, 1)
  optimizer = optim.make_optimizer(optim_config, schedule)
  placement.check_batch_size(batch)
  state = placement.put_state(steps_lib.init_state(config, optimizer, batch, seed=0))
  params = state.params
  rng = np.random.default_rng(0)
  inputs, targets = (placement.put_batch(rng.integers(0, VOCAB, (batch, seq_len), dtype=np.int32),
                                         batch) for _ in range(2))
  reset = np.bool_(False)
  shardings = placement.state_shardings(state)
  split, replicated = placement.batch_split, placement.replicated
  step = jax.jit(steps_lib.make_train_step(registry.module_of(config), optimizer, schedule),
                 in_shardings=(shardings, split, split, replicated),
                 out_shardings=(shardings, replicated), donate_argnums=0)
  start = time.perf_counter()
  compiled = step.lower(state, inputs, targets, reset).compile()
  compile_s = time.perf_counter() - start

  def one_step():
    nonlocal state
    state, metrics = compiled(state, inputs, targets, reset)
    jax.block_until_ready(metrics)
  one_step.compiled = compiled  # for XLA's cost analysis (experiments/performance/zoo_profile.py)
  return one_step, compile_s, params


def train(cell: str | None = None, num_layers: int | None = None,
          hidden_size: int | None = None, batch: int = 32, seq_len: int = 256,
          steps: int = 10, warmup: int = 2, cpu_devices: int = 0, model: dict | None = None,
          stub_scans: bool = False, **model_fields) -> dict:
  """seqlab's jitted, donated train step (Adam, global-norm clipping) on random tokens.

  It runs as training does (`seqlab.train`): on every device, the batch split over
  them; `cpu_devices` splits a CPU into that many devices (`parallel.cpu_devices`).
  The model: `model`, a config's model group (any model), or the default model's `cell`,
  `num_layers`, `hidden_size` (see `model_config`). `stub_scans`: see `stub_model_scans`.
  """
  from seqlab import parallel  # pylint: disable=g-import-not-at-top
  parallel.use_cpu_devices(cpu_devices)  # before anything starts JAX (a model lookup does)
  from seqlab.models import flops  # pylint: disable=g-import-not-at-top
  if stub_scans:
    stub_model_scans()
  config = model_config(cell, num_layers, hidden_size, model, **model_fields)
  placement = parallel.Placement()
  one_step, compile_s, params = build_step(config, placement, batch, seq_len, steps + warmup)
  for _ in range(warmup):
    one_step()
  seconds = median_time(one_step, steps)
  result = {'step_s': seconds, 'chars_per_sec': batch * seq_len / seconds, 'compile_s': compile_s,
            'num_params': registry.count_params(params), 'peak_rss_mib': peak_rss_mib(),
            'peak_device_mib': device_peak_mib(), 'devices': placement.num_devices}
  if model is not None:  # a zoo row: what ran, and its FLOPs per character
    result.update(model=registry.describe(config), flops_per_char=flops.per_char(config),
                  stub_scans=stub_scans)
  return result


def sample(cell: str | None = None, num_layers: int | None = None,
           hidden_size: int | None = None, batch: int = 1, length: int = 2000, repeats: int = 5,
           model: dict | None = None, **model_fields) -> dict:
  """seqlab's sampler (`seqlab.generate.make_sampler`): `length` characters after a
  one-character prime, temperature 0.8, per call; the model as `train` takes it."""
  import jax  # pylint: disable=g-import-not-at-top
  from seqlab import generate as sampling  # pylint: disable=g-import-not-at-top
  config = model_config(cell, num_layers, hidden_size, model, **model_fields)
  params = registry.init_params(config, seed=0)
  sampler = sampling.make_sampler(registry.module_of(config), length)
  key = jax.random.PRNGKey(0)
  start = time.perf_counter()
  jax.block_until_ready(sampler(params, [0], batch, key, 0.8))
  first_call_s = time.perf_counter() - start
  seconds = median_time(lambda: jax.block_until_ready(sampler(params, [0], batch, key, 0.8)),
                        repeats)
  result = {'chars_per_sec': batch * length / seconds, 'first_call_s': first_call_s,
            'peak_rss_mib': peak_rss_mib(), 'length': length}
  if model is not None:
    result['model'] = registry.describe(config)
  return result
