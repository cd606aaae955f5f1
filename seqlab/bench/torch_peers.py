"""The bench worker's PyTorch peers: the same models trained by PyTorch, for the ratios.

`torch_train`: the LSTM rows' peer (nn.Embedding -> nn.LSTM/GRU/RNN -> nn.Linear). A zoo model
whose declaration names a peer (`registry.Model.bench_peer`) is timed by that measurement,
called with its row's model group and `batch`, `seq_len`, `steps`, `bf16` and `compile`:
`torch_gpt_train`, a nanoGPT-style GPT. Each reports its own `label` for the zoo table. Both
train with seqlab's Adam and clipping (`timing`) on random tokens, on a GPU when there is one;
`{'missing': ...}` where torch is not installed.
"""

import time

import numpy as np

from seqlab.bench.timing import CLIP, LEARNING_RATE, VOCAB, median_time, peak_rss_mib

_MISSING = 'torch is not installed (pip install torch to compare)'
_GPT_LABEL = 'PyTorch nanoGPT-style peer'  # its line in the zoo table


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
    return {'missing': _MISSING}
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
  seconds = median_time(one_step, steps)
  return {'step_s': seconds, 'chars_per_sec': batch * seq_len / seconds,
          'num_params': sum(p.numel() for p in modules.parameters()),
          'peak_rss_mib': peak_rss_mib(), 'threads': torch.get_num_threads(), 'device': device,
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
    return {'missing': _MISSING, 'label': _GPT_LABEL}
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
  seconds = median_time(one_step, steps)
  return {'step_s': seconds, 'chars_per_sec': batch * seq_len / seconds,
          'first_step_s': compile_s, 'compiled': compile, 'label': _GPT_LABEL,
          'num_params': sum(p.numel() for p in model.parameters()),
          'peak_rss_mib': peak_rss_mib(), 'threads': torch.get_num_threads(), 'device': device,
          'peak_device_mib': torch.cuda.max_memory_allocated() / 2 ** 20 if device == 'cuda'
                             else None}
