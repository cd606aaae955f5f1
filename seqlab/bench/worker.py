"""One benchmark measurement per process: `python -m seqlab.bench.worker KIND '{json args}'`.

`seqlab.bench` starts a fresh process for every measurement, so each one's peak
memory is its own and JAX and PyTorch never share threads. Prints one JSON line.

Kinds: `matmul` (fp32 matmul ceiling, JAX), `train` (seqlab train step),
`torch_train` (the same model and optimizer in PyTorch), `sample` (seqlab sampler).
Timings are medians over timed repetitions after warm-up, each ended with
`block_until_ready` (JAX) so that asynchronous dispatch is not mistaken for speed.
"""

import json
import resource
import statistics
import sys
import time

if __name__ == '__main__' and (sys.argv[1:2] == ['train'] or json.loads(
    sys.argv[2] if len(sys.argv) > 2 else '{}').get('malloc_tuning')):
  # seqlab trains as launch.py does (seqlab/host_memory.py); PyTorch with glibc's defaults,
  # or with the same settings when asked (`torch_train` with malloc_tuning=True).
  from seqlab import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.reuse_freed_memory()

# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np

VOCAB = 65  # tiny Shakespeare's vocabulary
CLIP = 5.0
LEARNING_RATE = 2e-3


def _median_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _device_peak_mib() -> float | None:
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
  seconds = _median_time(lambda: jax.block_until_ready(dot(a, b)), repeats)
  return {'gflops': 2 * size ** 3 / seconds / 1e9, 'size': size}


def _model_config(cell, num_layers, hidden_size, **fields):
  from seqlab.models import char_rnn as model_lib  # pylint: disable=g-import-not-at-top
  return model_lib.ModelConfig(vocab_size=VOCAB, cell=cell, num_layers=num_layers,
                               hidden_size=hidden_size, **fields)


def train(cell: str, num_layers: int, hidden_size: int, batch: int, seq_len: int,
          steps: int = 10, warmup: int = 2, cpu_devices: int = 0, **model_fields) -> dict:
  """seqlab's jitted, donated train step (Adam, global-norm clipping) on random tokens.

  It runs as training does (`seqlab.train`): on every device, the batch split over
  them; `cpu_devices` splits a CPU into that many devices (`parallel.cpu_devices`).
  """
  from seqlab import parallel  # pylint: disable=g-import-not-at-top
  parallel.use_cpu_devices(cpu_devices)  # before anything starts JAX
  import jax  # pylint: disable=g-import-not-at-top
  from ml_collections import config_dict  # pylint: disable=g-import-not-at-top
  from seqlab.models import char_rnn as model_lib  # pylint: disable=g-import-not-at-top
  from seqlab import steps as steps_lib  # pylint: disable=g-import-not-at-top
  from seqlab import optim  # pylint: disable=g-import-not-at-top
  config = _model_config(cell, num_layers, hidden_size, **model_fields)
  # The optimizer training builds (seqlab.optim), with the peer's settings: Adam, clip 5.
  optim_config = config_dict.ConfigDict(dict(
      name='adam', learning_rate=LEARNING_RATE, b1=0.9, b2=0.999, weight_decay=0.0,
      grad_clip=CLIP, schedule='constant', warmup_steps=0))
  schedule = optim.make_schedule(optim_config, steps + warmup, 1)
  optimizer = optim.make_optimizer(optim_config, schedule)
  placement = parallel.Placement()
  placement.check_batch_size(batch)
  state = placement.put_state(steps_lib.init_state(config, optimizer, batch, seed=0))
  rng = np.random.default_rng(0)
  inputs, targets = (placement.put_batch(rng.integers(0, VOCAB, (batch, seq_len), dtype=np.int32),
                                         batch) for _ in range(2))
  reset = np.bool_(False)
  shardings = placement.state_shardings(state)
  split, replicated = placement.batch_split, placement.replicated
  step = jax.jit(steps_lib.make_train_step(model_lib.CharLM(config), optimizer, schedule),
                 in_shardings=(shardings, split, split, replicated),
                 out_shardings=(shardings, replicated), donate_argnums=0)
  start = time.perf_counter()
  compiled = step.lower(state, inputs, targets, reset).compile()
  compile_s = time.perf_counter() - start
  for _ in range(warmup):
    state, metrics = compiled(state, inputs, targets, reset)
  jax.block_until_ready(metrics)

  def one_step():
    nonlocal state
    state, metrics = compiled(state, inputs, targets, reset)
    jax.block_until_ready(metrics)
  seconds = _median_time(one_step, steps)
  return {'step_s': seconds, 'chars_per_sec': batch * seq_len / seconds, 'compile_s': compile_s,
          'num_params': model_lib.count_params(state.params), 'peak_rss_mib': _peak_rss_mib(),
          'peak_device_mib': _device_peak_mib(), 'devices': placement.num_devices}


def torch_train(cell: str, num_layers: int, hidden_size: int, batch: int, seq_len: int,
                steps: int = 10, warmup: int = 2, bf16: bool = False,
                malloc_tuning: bool = False) -> dict:
  """PyTorch peer: nn.Embedding -> nn.LSTM/GRU/RNN -> nn.Linear, Adam, clipping, carried state.

  `malloc_tuning` (applied at import, above) runs it under seqlab's glibc malloc
  settings, which speed PyTorch's CPU training up as well.

  On a GPU it runs there (cuDNN's RNN), with TF32 allowed as JAX allows it by
  default; `bf16` runs the forward under `torch.autocast(bfloat16)`.
  """
  del malloc_tuning  # applied when the process started
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return {'missing': 'torch is not installed (pip install torch to compare)'}
  torch.manual_seed(0)
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
  rnn_class = {'lstm': torch.nn.LSTM, 'gru': torch.nn.GRU, 'rnn': torch.nn.RNN}[cell]
  # Embedding(V, V) stands in for seqlab's one-hot input: the same layer-1 weight shape.
  embed = torch.nn.Embedding(VOCAB, VOCAB)
  rnn = rnn_class(VOCAB, hidden_size, num_layers, batch_first=True)
  head = torch.nn.Linear(hidden_size, VOCAB)
  modules = torch.nn.ModuleList([embed, rnn, head]).to(device)
  optimizer = torch.optim.Adam(modules.parameters(), lr=LEARNING_RATE)
  rng = np.random.default_rng(0)
  inputs, targets = (torch.from_numpy(rng.integers(0, VOCAB, (batch, seq_len))).to(device)
                     for _ in range(2))
  zeros = torch.zeros(num_layers, batch, hidden_size, device=device)
  carry = (zeros, zeros.clone()) if cell == 'lstm' else zeros

  def one_step():
    nonlocal carry
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
      out, new_carry = rnn(embed(inputs), carry)
      logits = head(out).float()
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(modules.parameters(), CLIP)
    optimizer.step()
    carry = tuple(c.detach().float() for c in new_carry) if cell == 'lstm' else \
        new_carry.detach().float()
    loss.item()  # wait for the step, as block_until_ready does for JAX
  for _ in range(warmup):
    one_step()
  seconds = _median_time(one_step, steps)
  return {'step_s': seconds, 'chars_per_sec': batch * seq_len / seconds,
          'num_params': sum(p.numel() for p in modules.parameters()),
          'peak_rss_mib': _peak_rss_mib(), 'threads': torch.get_num_threads(), 'device': device,
          'peak_device_mib': torch.cuda.max_memory_allocated() / 2 ** 20 if device == 'cuda'
                             else None}


def sample(cell: str, num_layers: int, hidden_size: int, batch: int, length: int = 2000,
           repeats: int = 5, **model_fields) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from seqlab.models import char_rnn as model_lib  # pylint: disable=g-import-not-at-top
  from seqlab import generate as sampling  # pylint: disable=g-import-not-at-top
  config = _model_config(cell, num_layers, hidden_size, **model_fields)
  params = model_lib.init_params(config, seed=0)
  sampler = sampling.make_sampler(model_lib.CharLM(config), length)
  key = jax.random.PRNGKey(0)
  start = time.perf_counter()
  jax.block_until_ready(sampler(params, [0], batch, key, 0.8))
  first_call_s = time.perf_counter() - start
  seconds = _median_time(lambda: jax.block_until_ready(sampler(params, [0], batch, key, 0.8)),
                         repeats)
  return {'chars_per_sec': batch * length / seconds, 'first_call_s': first_call_s,
          'peak_rss_mib': _peak_rss_mib()}


KINDS = {'matmul': matmul, 'train': train, 'torch_train': torch_train, 'sample': sample}

if __name__ == '__main__':
  kind, args = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
  print(json.dumps(KINDS[kind](**args)))
