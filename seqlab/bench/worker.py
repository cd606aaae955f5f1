"""One benchmark measurement per process: `python -m seqlab.bench.worker KIND '{json args}'`.

`seqlab.bench` starts a fresh process for every measurement, so each one's peak
memory is its own and JAX and PyTorch never share threads. Prints one JSON line.

Kinds: `matmul` (fp32 matmul ceiling, JAX), `bandwidth` (memory bandwidth, JAX),
`train` (seqlab train step, any model), `torch_train` (the same LSTM/GRU/RNN and optimizer
in PyTorch), `torch_gpt_train` (a nanoGPT-style GPT in PyTorch), `sample` (seqlab sampler).
Timings are medians over timed repetitions after warm-up, each ended with
`block_until_ready` (JAX) so that asynchronous dispatch is not mistaken for speed.
"""

import json
import resource
import statistics
import sys
import time

if __name__ == '__main__' and (sys.argv[1:2] in (['train'], ['bandwidth']) or json.loads(
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


def bandwidth(mib: int = 256, repeats: int = 10) -> dict:
  """Memory bandwidth as JAX sees it: x <- 0.5 x over `mib` MiB of float32, read and written in
  place (donated), the access pattern of an elementwise op too large for the caches (the bound
  of Mamba's scan); under the train worker's malloc settings. `new_buffer_gbytes_per_s`: the
  same op into a fresh buffer each time (what an op that allocates its output pays)."""
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
  seconds = _median_time(step, repeats)
  jax.block_until_ready(fresh(x))
  fresh_seconds = _median_time(lambda: jax.block_until_ready(fresh(x)), repeats)
  return {'gbytes_per_s': 2 * nbytes / seconds / 1e9,
          'new_buffer_gbytes_per_s': 2 * nbytes / fresh_seconds / 1e9, 'mib': mib}


def _model_config(cell=None, num_layers=None, hidden_size=None, model=None, **fields):
  """The model a measurement runs: `model`, a config's model group (any model of
  seqlab.models.registry, e.g. {'name': 'mamba', 'width': 168, ...}), or else the char_rnn
  cell, layers and hidden size of the LSTM rows, with extra ModelConfig `fields`."""
  from seqlab.models import registry  # pylint: disable=g-import-not-at-top
  if model is not None:
    return registry.config_of({**model, **fields}, VOCAB)
  return registry.config_of(dict(name='char_rnn', cell=cell, num_layers=num_layers,
                                 hidden_size=hidden_size, **fields), VOCAB)


def _stub_scans() -> None:
  """Replaces every zoo model's linear recurrence by elementwise work without the time loop
  (same inputs and output shapes, every input still in the gradient): a profile of what the
  model costs without its scan. The numbers it trains are not the model's."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from seqlab.models import hawk, mamba, min_rnn  # pylint: disable=g-import-not-at-top

  def min_rnn_scan(a_TxBxH, b_TxBxH, h0_BxH, *, scan, log_space):
    del scan
    h_TxBxH = a_TxBxH + b_TxBxH + h0_BxH
    return jnp.exp(h_TxBxH) if log_space else h_TxBxH

  def hawk_scan(a_BxTxL, b_BxTxL, h_BxL, scan):
    del scan
    h_BxTxL = a_BxTxL * h_BxL[:, None] + b_BxTxL
    return h_BxTxL, h_BxTxL[:, -1]

  def mamba_scan(u_BxTxE, delta_BxTxE, A_ExN, B_BxTxN, C_BxTxN, D_E, h_BxExN, scan):
    del scan
    bc_BxTx1 = jnp.sum(B_BxTxN * C_BxTxN, axis=-1, keepdims=True)
    y_BxTxE = delta_BxTxE * u_BxTxE * bc_BxTx1 + jnp.sum(A_ExN, axis=-1)
    return y_BxTxE + u_BxTxE * D_E, h_BxExN + jnp.mean(y_BxTxE, axis=1)[..., None]

  min_rnn.scan_linear, hawk.linear_scan, mamba.selective_scan = (min_rnn_scan, hawk_scan,
                                                                 mamba_scan)


def build_step(config, placement, batch: int, seq_len: int, num_steps: int):
  """seqlab's train step for `config` on `placement`'s devices, compiled, with its state and a
  random batch: (one_step() running a step to the end, compile seconds, the params)."""
  import jax  # pylint: disable=g-import-not-at-top
  from ml_collections import config_dict  # pylint: disable=g-import-not-at-top
  from seqlab.models import registry  # pylint: disable=g-import-not-at-top
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
  The model: `model`, a config's model group (any model), or the char_rnn `cell`,
  `num_layers`, `hidden_size` (see `_model_config`). `stub_scans`: see `_stub_scans`.
  """
  from seqlab import parallel  # pylint: disable=g-import-not-at-top
  parallel.use_cpu_devices(cpu_devices)  # before anything starts JAX
  from seqlab.models import flops  # pylint: disable=g-import-not-at-top
  from seqlab.models import registry  # pylint: disable=g-import-not-at-top
  if stub_scans:
    _stub_scans()
  config = _model_config(cell, num_layers, hidden_size, model, **model_fields)
  placement = parallel.Placement()
  one_step, compile_s, params = build_step(config, placement, batch, seq_len, steps + warmup)
  for _ in range(warmup):
    one_step()
  seconds = _median_time(one_step, steps)
  result = {'step_s': seconds, 'chars_per_sec': batch * seq_len / seconds, 'compile_s': compile_s,
            'num_params': registry.count_params(params), 'peak_rss_mib': _peak_rss_mib(),
            'peak_device_mib': _device_peak_mib(), 'devices': placement.num_devices}
  if model is not None:  # a zoo row: what ran, and its FLOPs per character
    result.update(model=registry.describe(config), flops_per_char=flops.per_char(config),
                  stub_scans=stub_scans)
  return result


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


def torch_gpt_train(num_layers: int, num_heads: int, width: int, context: int, batch: int,
                    seq_len: int, steps: int = 10, warmup: int = 2, bf16: bool = False,
                    compile: bool = False, **unused) -> dict:  # pylint: disable=redefined-builtin
  """PyTorch peer of the GPT: nanoGPT's model.py in brief (token and learned position
  embeddings, pre-LayerNorm blocks of causal self-attention by
  `F.scaled_dot_product_attention(is_causal=True)` (flash attention on a GPU, as nanoGPT) and
  a 4x GELU MLP, no biases, the head tied to the token embedding), dropout 0, trained with
  the LSTM peer's Adam and clipping. `compile`: under `torch.compile`, as nanoGPT's train.py
  by default (its compile time is not in the timings). `unused`: the group's other fields."""
  del unused
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return {'missing': 'torch is not installed (pip install torch to compare)'}
  from torch import nn as tnn  # pylint: disable=g-import-not-at-top
  functional = torch.nn.functional
  torch.manual_seed(0)
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

  class Block(tnn.Module):
    def __init__(self):
      super().__init__()
      self.ln_1, self.ln_2 = tnn.LayerNorm(width, bias=False), tnn.LayerNorm(width, bias=False)
      self.c_attn = tnn.Linear(width, 3 * width, bias=False)
      self.attn_proj = tnn.Linear(width, width, bias=False)
      self.c_fc = tnn.Linear(width, 4 * width, bias=False)
      self.mlp_proj = tnn.Linear(4 * width, width, bias=False)

    def forward(self, x):
      B, T, D = x.shape
      q, k, v = self.c_attn(self.ln_1(x)).split(D, dim=2)
      q, k, v = (a.view(B, T, num_heads, D // num_heads).transpose(1, 2) for a in (q, k, v))
      y = functional.scaled_dot_product_attention(q, k, v, is_causal=True)
      x = x + self.attn_proj(y.transpose(1, 2).contiguous().view(B, T, D))
      return x + self.mlp_proj(functional.gelu(self.c_fc(self.ln_2(x))))

  class GPT(tnn.Module):
    def __init__(self):
      super().__init__()
      self.wte, self.wpe = tnn.Embedding(VOCAB, width), tnn.Embedding(context, width)
      self.h = tnn.ModuleList([Block() for _ in range(num_layers)])
      self.ln_f = tnn.LayerNorm(width, bias=False)

    def forward(self, idx):
      x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
      for block in self.h:
        x = block(x)
      return self.ln_f(x) @ self.wte.weight.t()  # the tied head

  model = GPT().to(device)
  optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
  forward = torch.compile(model) if compile else model
  rng = np.random.default_rng(0)
  inputs, targets = (torch.from_numpy(rng.integers(0, VOCAB, (batch, seq_len))).to(device)
                     for _ in range(2))

  def one_step():
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
      logits = forward(inputs).float()
    loss = functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    optimizer.step()
    loss.item()  # wait for the step
  start = time.perf_counter()
  one_step()  # with compile: compiles here
  compile_s = time.perf_counter() - start
  for _ in range(warmup):
    one_step()
  seconds = _median_time(one_step, steps)
  return {'step_s': seconds, 'chars_per_sec': batch * seq_len / seconds,
          'first_step_s': compile_s, 'compiled': compile,
          'num_params': sum(p.numel() for p in model.parameters()),
          'peak_rss_mib': _peak_rss_mib(), 'threads': torch.get_num_threads(), 'device': device,
          'peak_device_mib': torch.cuda.max_memory_allocated() / 2 ** 20 if device == 'cuda'
                             else None}


def sample(cell: str | None = None, num_layers: int | None = None,
           hidden_size: int | None = None, batch: int = 1, length: int = 2000, repeats: int = 5,
           model: dict | None = None, **model_fields) -> dict:
  """seqlab's sampler (`seqlab.generate.make_sampler`): `length` characters after a
  one-character prime, temperature 0.8, per call; the model as `train` takes it."""
  import jax  # pylint: disable=g-import-not-at-top
  from seqlab.models import registry  # pylint: disable=g-import-not-at-top
  from seqlab import generate as sampling  # pylint: disable=g-import-not-at-top
  config = _model_config(cell, num_layers, hidden_size, model, **model_fields)
  params = registry.init_params(config, seed=0)
  sampler = sampling.make_sampler(registry.module_of(config), length)
  key = jax.random.PRNGKey(0)
  start = time.perf_counter()
  jax.block_until_ready(sampler(params, [0], batch, key, 0.8))
  first_call_s = time.perf_counter() - start
  seconds = _median_time(lambda: jax.block_until_ready(sampler(params, [0], batch, key, 0.8)),
                         repeats)
  result = {'chars_per_sec': batch * length / seconds, 'first_call_s': first_call_s,
            'peak_rss_mib': _peak_rss_mib(), 'length': length}
  if model is not None:
    result['model'] = registry.describe(config)
  return result


KINDS = {'matmul': matmul, 'train': train, 'torch_train': torch_train,
         'torch_gpt_train': torch_gpt_train, 'sample': sample, 'bandwidth': bandwidth}

if __name__ == '__main__':
  kind, args = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
  print(json.dumps(KINDS[kind](**args)))
