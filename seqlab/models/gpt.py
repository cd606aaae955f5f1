"""A decoder-only transformer (GPT) whose carry is a KV cache: nanoGPT's model on seqlab's
`(tokens BxT, carry) -> (logits BxTxV float32, carry)` interface.

Followed: karpathy/nanoGPT `model.py` (LayerNorm, CausalSelfAttention, MLP, Block, GPT,
`_init_weights`, `generate`). The defaults are its shakespeare_char "baby GPT" (6 layers, 6
heads, width 384, block_size 256, dropout 0.2, bias=False; 10.65M parameters without wpe).
With D = width, H = num_heads, d = D / H, L = num_layers, positions p = 0, 1, ...:

  x = Dropout(wte[token] + wpe[p])
  L blocks:  x = x + Dropout(Attn(LN_1(x)));   x = x + Dropout(MLP(LN_2(x)))
  Attn(u) = c_proj(concat_h softmax_s(q_h(t) . k_h(s) / sqrt(d), s <= t) v_h(s)),
            [q | k | v] = c_attn(u) (D -> 3D), attention weights dropped out too
  MLP(u) = c_proj(GELU(c_fc(u))) (D -> 4D -> D), exact (erf) GELU as torch's nn.GELU()
  logits = LN_f(x) wte^T (the output layer is the input embedding, tied)
LayerNorm: eps 1e-5, two-pass variance, scale 1, a bias only when `bias` (as every Linear).
Init: Linear kernels and both embeddings normal(0, 0.02), the two c_proj kernels of each
block normal(0, 0.02 / sqrt(2 L)), biases 0. Parameters: wte, wpe, ln_f and per block h_i:
ln_1, c_attn, attn_c_proj, ln_2, c_fc, mlp_c_proj (nanoGPT's h.i.attn.c_proj is attn_c_proj).

The carry (every leaf batch-first; all zeros = nothing read): `pos` int32[B], the number of
tokens in the window (0..context); `tokens` int32[B, context], that window; `layers`, per
block {'k', 'v'}: float32[B, context, H, d] of the window's tokens (slots >= pos are unused,
and masked by position: a query at position p attends to slots s <= p only). A call reads T
tokens (1 <= T <= context, else a SeqlabError when tracing) and conditions every logit on
the last `context` tokens at most, as nanoGPT's `generate` (idx[:, -block_size:]):
- pos + T <= context: the tokens get positions pos..pos+T-1, attend to the cache and to
  each other, and are appended (pos += T). From the zero carry, that is the plain forward.
- otherwise (the window is full: sampling past it): re-read. The window becomes the last
  `context` tokens of stored + new; it is read afresh at positions 0..context-1 (learned
  positions: a rolling cache would be a different model) and replaces the cache; pos =
  context. A new token's logits then see the window up to it: for T = 1, exactly
  nanoGPT's generate (and its cost: one forward of `context` tokens per token); for T > 1
  the last new token's logits and the carry are exact, the earlier new tokens see fewer
  than `context` tokens (so a long prompt may be fed in chunks of <= context).
The choice is one `jax.lax.cond` (via `nn.cond`) on all(pos + T <= context), so a jitted
scan can sample any length in constant memory; rows may differ in pos (the re-read branch
handles every row, full or not). T == context always reads afresh (no cond). Under vmap
with a batched pos, the cond runs both branches (a select): correct, but slower.

Deviations from nanoGPT: logits at every position (nanoGPT's inference computes only the
last); attention dropout masks the whole B x H x T x context score array (the masked
slots are zero, so the distribution of the kept weights is the same); float32 by default.

`matmul_dtype='bfloat16'` (precision.py, the zoo's rule): c_attn, both
c_proj, c_fc, the q . k and weights . v products and the tied output layer take bf16 inputs
(and kernel) and return float32; the embeddings, LayerNorms, the mask, the softmax, the KV
cache (the carry: k and v are stored in float32) and the parameters stay float32.
"""

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqlab.errors import SeqlabError
from seqlab.models.layers import Dropout
from seqlab.models.precision import attend, check_matmul_dtype, dense, einsum
from seqlab.models import registry

STD = 0.02  # nanoGPT's _init_weights


@dataclasses.dataclass(frozen=True)
class GPTConfig:
  vocab_size: int
  num_layers: int = 6
  num_heads: int = 6
  width: int = 384  # n_embd, divided into num_heads heads
  context: int = 256  # nanoGPT's block_size: the window (and the positions learned)
  dropout: float = 0.2  # embeddings, attention weights, both residual branches
  bias: bool = False  # biases in every Linear and LayerNorm
  # 'bfloat16': bf16 matmul inputs, fp32 accumulation, softmax, cache, params and loss (GPU/TPU).
  matmul_dtype: str = 'float32'

  def __post_init__(self):
    for name in ('vocab_size', 'num_layers', 'num_heads', 'width', 'context'):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SeqlabError(f'model.{name} must be an integer >= 1, got {value!r}')
    if self.width % self.num_heads:
      raise SeqlabError(f'model.width ({self.width}) must be a multiple of model.num_heads '
                        f'({self.num_heads}); change one of them')
    if (not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool)
        or not 0.0 <= self.dropout < 1.0):
      raise SeqlabError(f'model.dropout must be in [0, 1), got {self.dropout!r}')
    if not isinstance(self.bias, bool):
      raise SeqlabError(f'model.bias must be True or False, got {self.bias!r}')
    check_matmul_dtype(self.matmul_dtype)

  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads

  @classmethod
  def from_config(cls, model_config, vocab_size: int) -> 'GPTConfig':
    fields = {f.name for f in dataclasses.fields(cls)} - {'vocab_size'}
    return cls(vocab_size=vocab_size, **{k: v for k, v in model_config.items() if k in fields})


def init_carry(config: GPTConfig, batch_size: int):
  """The empty cache: {'pos': B, 'tokens': B x context, 'layers': ({'k', 'v'} per block)}."""
  shape = (batch_size, config.context, config.num_heads, config.head_dim)
  return {'pos': jnp.zeros((batch_size,), jnp.int32),
          'tokens': jnp.zeros((batch_size, config.context), jnp.int32),
          'layers': tuple({'k': jnp.zeros(shape, jnp.float32), 'v': jnp.zeros(shape, jnp.float32)}
                          for _ in range(config.num_layers))}


def _rows(fn, *args):
  return jax.vmap(fn)(*args)


def _write(cache_BxN, new_BxT, start_B):
  """cache[b, start_b + i] = new[b, i] (the caller keeps start_b + T <= N)."""
  return _rows(lambda c, u, s: jax.lax.dynamic_update_slice_in_dim(c, u, s, axis=0),
               cache_BxN, new_BxT, start_B)


def _take(x_BxN, start_B, size: int):
  """x[b, start_b : start_b + size]."""
  return _rows(lambda x, s: jax.lax.dynamic_slice_in_dim(x, s, size, axis=0), x_BxN, start_B)


def _dense(cfg: GPTConfig, features: int, name: str, std: float = STD):
  return dense(features, cfg.matmul_dtype, use_bias=cfg.bias,
               kernel_init=nn.initializers.normal(std), name=name)


def _layer_norm(cfg: GPTConfig, name: str | None = None):
  return nn.LayerNorm(epsilon=1e-5, use_bias=cfg.bias, use_fast_variance=False, name=name)


class Block(nn.Module):
  """(x BxTxD, positions BxT, {'k', 'v'} cache) -> (x, cache with the T tokens written)."""
  config: GPTConfig

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, cache, *, train: bool, rate: Any):
    cfg = self.config
    B, T, D = x_BxTxD.shape
    drop = lambda x: Dropout(rate)(x, deterministic=not train)
    proj_std = STD / math.sqrt(2 * cfg.num_layers)
    qkv_BxTx3D = _dense(cfg, 3 * D, 'c_attn')(_layer_norm(cfg, 'ln_1')(x_BxTxD))
    q_BxTxHxK, k_BxTxHxK, v_BxTxHxK = jnp.split(
        qkv_BxTx3D.reshape(B, T, 3, cfg.num_heads, cfg.head_dim), 3, axis=2)
    k_BxNxHxK = _write(cache['k'], k_BxTxHxK[:, :, 0], positions_BxT[:, 0])
    v_BxNxHxK = _write(cache['v'], v_BxTxHxK[:, :, 0], positions_BxT[:, 0])
    scores_BxHxTxN = einsum('bthk,bshk->bhts', q_BxTxHxK[:, :, 0], k_BxNxHxK,
                            cfg.matmul_dtype) / math.sqrt(cfg.head_dim)
    visible_BxTxN = jnp.arange(cfg.context) <= positions_BxT[:, :, None]
    scores_BxHxTxN = jnp.where(visible_BxTxN[:, None], scores_BxHxTxN, -jnp.inf)
    weights_BxHxTxN = drop(jax.nn.softmax(scores_BxHxTxN.astype(jnp.float32), axis=-1))
    y_BxTxD = einsum('bhts,bshk->bthk', weights_BxHxTxN, v_BxNxHxK,
                     cfg.matmul_dtype).reshape(B, T, D)
    x_BxTxD = x_BxTxD + drop(_dense(cfg, D, 'attn_c_proj', proj_std)(y_BxTxD))
    h_BxTxF = _dense(cfg, 4 * D, 'c_fc')(_layer_norm(cfg, 'ln_2')(x_BxTxD))
    h_BxTxD = _dense(cfg, D, 'mlp_c_proj', proj_std)(jax.nn.gelu(h_BxTxF, approximate=False))
    return x_BxTxD + drop(h_BxTxD), {'k': k_BxNxHxK, 'v': v_BxNxHxK}


class _EmbedDropout(nn.Module):
  """Dropout whose rate comes with the call (a setup-defined module cannot take it)."""

  @nn.compact
  def __call__(self, x, *, train: bool, rate: Any):
    return Dropout(rate)(x, deterministic=not train)


class GPTLM(nn.Module):
  """(tokens BxT int, carry) -> (logits BxTxV float32, carry). Needs a 'dropout' rng when
  training with a rate > 0; `dropout_rate`, if given, replaces `config.dropout` (it may be
  a traced value). Its window (config.context) is the most tokens a logit conditions on."""
  config: GPTConfig

  def setup(self):
    cfg = self.config
    embed_init = nn.initializers.normal(STD)
    self.wte = nn.Embed(cfg.vocab_size, cfg.width, embedding_init=embed_init)
    self.wpe = nn.Embed(cfg.context, cfg.width, embedding_init=embed_init)
    self.drop = _EmbedDropout()
    self.h = [Block(cfg) for _ in range(cfg.num_layers)]
    self.ln_f = _layer_norm(cfg)

  def _read(self, tokens_BxT, start_B, layers, train, rate):
    """Tokens at positions start..start+T-1 against `layers`: (LN_f(x) BxTxD, layers)."""
    positions_BxT = start_B[:, None] + jnp.arange(tokens_BxT.shape[1], dtype=jnp.int32)
    x_BxTxD = self.drop(self.wte(tokens_BxT) + self.wpe(positions_BxT), train=train, rate=rate)
    new_layers = []
    for block, cache in zip(self.h, layers):
      x_BxTxD, cache = block(x_BxTxD, positions_BxT, cache, train=train, rate=rate)
      new_layers.append(cache)
    return self.ln_f(x_BxTxD), tuple(new_layers)

  def _append(self, tokens_BxT, carry, train, rate):
    """The window has room: read the tokens after the cached ones."""
    pos_B = carry['pos']
    x_BxTxD, layers = self._read(tokens_BxT, pos_B, carry['layers'], train, rate)
    return x_BxTxD, {'pos': pos_B + tokens_BxT.shape[1],
                     'tokens': _write(carry['tokens'], tokens_BxT, pos_B), 'layers': layers}

  def _reread(self, tokens_BxT, carry, train, rate):
    """Read the last `context` tokens of stored + new afresh, at positions 0..context-1."""
    (B, T), N = tokens_BxT.shape, self.config.context
    pos_B = carry['pos']
    start_B = jnp.maximum(pos_B + T - N, 0)  # the window: sequence[start : start + N]
    sequence_BxM = _write(jnp.concatenate([carry['tokens'], jnp.zeros((B, T), jnp.int32)], 1),
                          tokens_BxT, pos_B)
    window_BxN = _take(sequence_BxM, start_B, N)
    empty = jax.tree.map(jnp.zeros_like, carry['layers'])
    x_BxNxD, layers = self._read(window_BxN, jnp.zeros_like(pos_B), empty, train, rate)
    return _take(x_BxNxD, pos_B - start_B, T), {'pos': pos_B + T - start_B,
                                                'tokens': window_BxN, 'layers': layers}

  def __call__(self, tokens_BxT, carry, *, train: bool = False, dropout_rate: Any = None):
    cfg = self.config
    T = tokens_BxT.shape[1]
    if not 1 <= T <= cfg.context:
      raise SeqlabError(f'a GPT reads 1 to model.context={cfg.context} tokens per call, got '
                        f'{T}; use a sequence length <= model.context')
    rate = cfg.dropout if dropout_rate is None else dropout_rate
    tokens_BxT = tokens_BxT.astype(jnp.int32)
    if T == cfg.context:  # the window is exactly these tokens, whatever the cache holds
      x_BxTxD, carry = self._reread(tokens_BxT, carry, train, rate)
    else:
      branch = lambda method: functools.partial(method, train=train, rate=rate)
      x_BxTxD, carry = nn.cond(jnp.all(carry['pos'] + T <= cfg.context),
                               branch(GPTLM._append), branch(GPTLM._reread), self, tokens_BxT,
                               carry)
    return attend(self.wte, x_BxTxD, cfg.matmul_dtype).astype(jnp.float32), carry


def _matrices(config: GPTConfig) -> list[tuple[str, int, int]]:
  D = config.width
  out = []
  for i in range(config.num_layers):
    out += [(f'h_{i}/c_attn', D, 3 * D), (f'h_{i}/attn_c_proj', D, D), (f'h_{i}/c_fc', D, 4 * D),
            (f'h_{i}/mlp_c_proj', 4 * D, D)]
  return out + [('wte (tied head)', D, config.vocab_size)]


# nanoGPT's AdamW as train_shakespeare_char.py sets it (configs/zoo.py's GPT recipes too).
NANOGPT_OPTIMIZER = {'optim.name': 'adamw', 'optim.learning_rate': 1e-3, 'optim.b2': 0.99,
                     'optim.weight_decay': 0.1, 'optim.decay': 'matrices', 'optim.grad_clip': 1.0}
_FIXED = dict(dropout=0.0, bias=False)
MODEL = registry.register(registry.Model(
    name='gpt', summary="nanoGPT's decoder-only transformer (Radford et al. 2019; Karpathy)",
    config_class=GPTConfig, module_class=GPTLM, init_carry=init_carry,
    describe=lambda c: (f'{c.num_layers}x{c.width} gpt ({c.num_heads} heads, '
                        f'context {c.context})'),
    matrices=_matrices,
    # q.k and weights.v over the full window, forward and backward (nanoGPT's estimate_mfu).
    extra_flops=lambda c: {'attention': 12 * c.num_layers * c.width * c.context},
    window=lambda c: c.context,
    state_size=lambda c, tokens: 2 * c.width * min(tokens, c.context),  # its K and V cache
    bench_peer='torch_gpt_train',
    variants={'gpt': registry.Variant(
        sizes={'tiny': dict(_FIXED, num_layers=2, num_heads=2, width=16, context=32),
               '0.8M': dict(_FIXED, num_layers=4, num_heads=4, width=128, context=256),  # 828,672
               '5M': dict(_FIXED, num_layers=6, num_heads=4, width=256, context=256)},  # 4,804,096
        zoo=dict(_FIXED, num_layers=4, num_heads=4, width=128, context=64),
        config=NANOGPT_OPTIMIZER,
        doc=('A small nanoGPT (4 layers, 4 heads, width 128, context 64), as nanoGPT\'s README '
             'runs shakespeare_char on a CPU, with AdamW (weight decay 0.1 on matrices) on '
             'random windows. Measured (2-core CPU, 4,900 steps): val loss 1.5497 +- 0.0076 over '
             'windows of 64 from the zero state, 1.5100 under `stream` (sliding windows of 64 '
             'scoring their second half).'))}))
