"""Gated Linear Attention (Yang, Wang, Shen, Panda and Kim 2023, arXiv:2312.06635) in the
paper's GLA Transformer layers.

`logits, carry = GLALM(config).apply(params, tokens_BxT, carry)`: the zoo's interface. The carry
holds each layer's matrix-valued state S (B x H x d_k x d_v per layer, float32): a sequence cut
into chunks with the carry passed along gives the logits of the whole sequence, and sampling
one token at a time is the same call with T = 1.

The operator, per head (d_k = width / 2 / H, d_v = width / H: the paper's expand_k 0.5,
expand_v 1), for row vectors q_t, k_t, alpha_t in R^{d_k}, v_t in R^{d_v}:

  S_t = diag(alpha_t) S_{t-1} + k_t^T v_t,      o_t = q_t S_t            (S_{-1}: the carry)

Two forms of it, chosen by `form`, tested equal in values and gradients (tests/test_zoo_gla.py;
declared `equivalent`, so the conformance suite checks them too):
- 'recurrent' (`gla_recurrent`): the equations above, one `jax.lax.scan` step per token.
- 'chunked' (`gla_chunked`): the paper's chunkwise parallel form with its secondary-level
  chunking (section 4.3). The sequence is cut into chunks of `chunk_size` tokens (the last one
  zero-padded: alpha = 1, k = v = q = 0 there, which changes no output and no state); with
  b_i = sum_{j <= i} log alpha_j within a chunk (a cumulative sum, <= 0, non-increasing):
    inter-chunk   o_i += (q_i * exp(b_i)) S_prev, and the state carried from chunk to chunk,
                  S_next = diag(exp(b_last)) S_prev + sum_j (k_j * exp(b_last - b_j))^T v_j
                  (a lax.scan over the T / chunk_size chunks);
    intra-chunk   o_i += sum_{j <= i in the chunk} [sum_d q_id k_jd exp(b_id - b_jd)] v_j,
                  in sub-chunks of `sub_chunk_size` tokens: between two sub-chunks (keys of
                  an earlier sub-chunk) as a plain matmul of q_i * exp(b_i - b_p) and
                  k_j * exp(b_p - b_j), with the pivot p the query sub-chunk's first token;
                  within a sub-chunk exactly, in log space: exp(b_i - b_j) for every pair
                  j <= i, every channel.
  Every exponent is <= 0 (the later cumulative sum minus an earlier one, or a masked -inf),
  so nothing overflows for any decay: the paper's stability argument; no exp(-b) appears.
  A call of one token (sampling) takes the recurrent step in either form (the same function).
Both forms compute the operator in float32, matmul_dtype notwithstanding.

The layer (the paper's GLA Transformer, section 4.4; L = num_layers, D = width, H = num_heads):

  y = x + Dropout(GLA(RMSNorm(x)));   x' = y + Dropout(SwiGLU(RMSNorm(y)))
  GLA(u): q = u W_q * d_k^-0.5, k = u W_k (D -> D/2, no bias), v = u W_v (D -> D, no bias)
          log alpha = logsigmoid(u W_a1 W_a2 + b_a) / tau, tau = 16 (the paper's
          alpha = sigmoid(...)^(1/tau), in log space), W_a1: D -> gate_rank (16), no bias,
          W_a2: gate_rank -> D/2 with bias b_a
          o = per-head operator above (heads split d_k and d_v)
          out = (HeadRMSNorm(o) * swish(u W_r + b_r)) W_o   (W_r, W_o: D -> D)
  SwiGLU(u) = (swish(u W_1) * (u W_2)) W_3,  D -> F -> D, no biases, F = ffn_width or
          8/3 D rounded up to a multiple of 16 (the paper's LLaMA-style FFN)
  logits = RMSNorm_f(x) W_out (untied, as fla's GLAConfig; `tie_embeddings` ties it to the
          embedding); RMSNorm eps 1e-6 (fla's GLAConfig.norm_eps), weights initialised to 1.
HeadRMSNorm normalises each head's d_v outputs separately: o_h / sqrt(mean(o_h^2) + 1e-6),
times a learned weight per channel (D of them, initialised to 1).
Init (fla's GLAForCausalLM._init_weights): every Linear kernel and the embedding normal(0.02),
biases 0 (so alpha starts at sigmoid(0)^(1/16) = 0.958 everywhere); W_o and W_3 normal(0.02 /
sqrt(2 L)), GPT-2's residual rescale as gpt.py's (fla applies one only with
prenorm_residual_strategy='rescale'; its default leaves them at normal(0.02)).

Checked against the operator of flash-linear-attention 0.5.2 (PyPI), `fla/ops/gla/naive.py`
`naive_recurrent_gla`: experiments/zoo/references/gla_vs_fla_naive.py (README there: the
numbers); the layer and the model against a float64 numpy transcription of the paper's
equations (tests/test_zoo_gla.py).

Deviations from the paper:
- Per-head norm: RMSNorm (as fla's GatedLinearAttention, FusedRMSNormGated); the paper's
  equations write LayerNorm per head. The pre-norms are RMSNorm too (fla's GLABlock; the
  paper's equations write LN). fla shares its head norm's weight across heads (d_v of them);
  here each channel has its own (D).
- The query scale d_k^-0.5 is not in the paper's equations; it is in the authors' code (fla's
  naive_recurrent_gla and chunk_gla, scale = K^-0.5) and equals rescaling W_q.
- The output gate's bias b_r is the paper's (fla's g_proj has none).
- Dropout (not in the paper): on each block's output before its residual addition.
- No fused kernels: the chunked form is plain jnp (einsums and a lax.scan over chunks); the
  sub-chunk interactions run in float32 (the paper's in half precision on tensor cores).
- Precision: float32 by default. `matmul_dtype='bfloat16'` (precision.py, the zoo's rule): W_q,
  W_k, W_v, W_a1, W_a2, W_r, W_o, the SwiGLU's three matrices and the decoder take bf16 inputs
  and kernel and return float32; the embedding, the norms, logsigmoid, the whole operator
  (state, decays, readout, the chunked form's intra-chunk products) and the carry stay float32.

Default: form='chunked', chunk_size=16, sub_chunk_size=4, the faster to train on this
project's 2-core x86_64 CPU at the 0.8M size (4 x 128, 4 heads, d_k 16, d_v 32), batch 32 x
256. Measured 2026-12-07: jitted train steps (loss, gradients, Adam update) of the settings
alternating in one process, 3 steps per round, median (min) seconds per step, on a machine
shared with other engineers' test runs (load average in brackets):
  1 device, 3 rounds [1.4-2.6]: recurrent 1.216 (1.083); chunked 16/4 0.980 (0.931), 19% less;
                                16/2 1.006 (0.926); 32/8 1.100 (0.935)
  1 device, 3 rounds [5-12], min only: recurrent 1.073; chunked 16/4 0.907, 8/4 0.921,
                                16/8 0.946, 32/4 0.998, 16/16 1.744 (no sub-chunks: every
                                pair of a chunk in log space, 1.9x the time of 16/4)
  2 devices, 5 rounds [3.7]:    recurrent 1.773 (1.014); chunked 16/4 1.636 (0.808)
`python -m seqlab.bench --train gla:0.8M --sample= --steps 10 --cpu_devices 2 --notorch
--model_fields '{"form": "recurrent"}'` (or "chunked"), three alternating runs of each, gave
6,600-12,400 characters/s for either form [2.5-4]: on the shared machine it cannot tell them
apart; a run of the default alone gave 6,730 (1.22 s per step).
Why: the recurrent form runs 256 dependent scan steps per layer, each a small B x H x d_k x
d_v update, and its backward pass keeps that state after every token (67 MB per layer at this
size) and reads it back; the chunked form has 16 such steps and puts the rest into batched
products. Its sub-chunks keep the exact log-space part small (c of the chunk's C keys per
query), which is why 16/4 beats 16/16.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqlab.errors import SeqlabError
from seqlab.models.layers import Dropout
from seqlab.models.precision import attend, check_matmul_dtype, dense
from seqlab.models import registry

FORMS = ('recurrent', 'chunked')
TAU = 16.0  # the paper's gate temperature (fla's gate_logit_normalizer)
NORM_EPS = 1e-6  # fla's GLAConfig.norm_eps
STD = 0.02  # fla's initializer_range


@dataclasses.dataclass(frozen=True)
class GLAConfig:
  vocab_size: int
  num_layers: int = 2
  width: int = 128  # D: value dim D, key dim D / 2, split into num_heads heads
  num_heads: int = 4
  gate_rank: int = 16  # the low-rank gate's inner width (the paper's 16)
  ffn_width: int = 0  # 0: 8/3 width rounded up to a multiple of 16
  tie_embeddings: bool = False  # the decoder is the embedding transposed
  dropout: float = 0.0
  form: str = 'chunked'  # 'recurrent' (lax.scan over tokens) or 'chunked' (chunkwise parallel)
  chunk_size: int = 16  # the chunked form's chunk (tokens)
  sub_chunk_size: int = 4  # its sub-chunks (min(sub_chunk_size, chunk_size) tokens)
  # 'bfloat16': bf16 matmul inputs, fp32 accumulation, operator, state, params and loss.
  matmul_dtype: str = 'float32'

  def __post_init__(self):
    for name, least in (('vocab_size', 1), ('num_layers', 1), ('width', 1), ('num_heads', 1),
                        ('gate_rank', 1), ('ffn_width', 0), ('chunk_size', 1),
                        ('sub_chunk_size', 1)):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise SeqlabError(f'model.{name} must be an integer >= {least}, got {value!r}')
    if self.width % (2 * self.num_heads):
      raise SeqlabError(f'model.width must be a multiple of 2 * model.num_heads (the key dim '
                        f'width / 2 splits into heads), got {self.width} with {self.num_heads} '
                        'heads')
    if not isinstance(self.tie_embeddings, bool):
      raise SeqlabError(f'model.tie_embeddings must be a bool, got {self.tie_embeddings!r}')
    if (not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool)
        or not 0.0 <= self.dropout < 1.0):
      raise SeqlabError(f'model.dropout must be in [0, 1), got {self.dropout!r}')
    if self.form not in FORMS:
      raise SeqlabError(f'model.form must be one of {FORMS}, got {self.form!r}')
    check_matmul_dtype(self.matmul_dtype)

  @property
  def d_k(self) -> int:
    return self.width // 2 // self.num_heads

  @property
  def d_v(self) -> int:
    return self.width // self.num_heads

  @property
  def ffn(self) -> int:
    return self.ffn_width or 16 * math.ceil(int(8 * self.width / 3) / 16)

  @property
  def sub_chunk(self) -> int:
    return min(self.sub_chunk_size, self.chunk_size)


def init_carry(config: GLAConfig, batch_size: int):
  """The zero state: a tuple with one {'S': B x H x d_k x d_v} per layer."""
  return tuple({'S': jnp.zeros((batch_size, config.num_heads, config.d_k, config.d_v),
                               jnp.float32)} for _ in range(config.num_layers))


# --- The operator. q, k, log_a: B x T x H x d_k; v: B x T x H x d_v; S: B x H x d_k x d_v.
# Returns (o: B x T x H x d_v, the state after the last token).

def gla_recurrent(q, k, v, log_a, S):
  """S_t = diag(exp(log_a_t)) S_{t-1} + k_t^T v_t, o_t = q_t S_t: one scan step per token."""
  def step(S, inputs):
    q_t, k_t, v_t, log_a_t = inputs  # B x H x d
    S = jnp.exp(log_a_t)[..., None] * S + k_t[..., None] * v_t[..., None, :]
    return S, jnp.einsum('bhk,bhkv->bhv', q_t, S)
  time_major = lambda a: jnp.swapaxes(a, 0, 1)
  S, o_TxBxHxV = jax.lax.scan(step, S, tuple(map(time_major, (q, k, v, log_a))))
  return time_major(o_TxBxHxV), S


def gla_chunked(q, k, v, log_a, S, chunk_size: int, sub_chunk_size: int):
  """The same function, chunkwise (the module docstring): chunks of chunk_size tokens, the
  intra-chunk part in sub-chunks of min(sub_chunk_size, chunk_size) tokens (a chunk is
  zero-padded to a whole number of sub-chunks: alpha = 1, q = k = v = 0 there)."""
  (B, T, H, _), Vd = q.shape, v.shape[-1]
  c = min(sub_chunk_size, chunk_size)
  N, M = -(-T // chunk_size), -(-chunk_size // c)  # chunks, sub-chunks per chunk
  C = M * c  # a chunk's tokens, with zeros after them when c does not divide chunk_size

  def chunks(a):  # B x T x H x d -> B x H x N x C x d, zero-padded at the end of every chunk
    a = jnp.pad(a, ((0, 0), (0, N * chunk_size - T), (0, 0), (0, 0)))
    a = a.reshape(B, N, chunk_size, H, a.shape[-1]).transpose(0, 3, 1, 2, 4)
    return jnp.pad(a, ((0, 0), (0, 0), (0, 0), (0, C - chunk_size), (0, 0)))
  q, k, v, log_a = map(chunks, (q, k, v, log_a))
  b = jnp.cumsum(log_a, axis=3)  # B H N C K: log of the decay from the chunk's start to i
  b_last = b[:, :, :, -1]  # B H N K

  # Between chunks: the state before each chunk, a scan over the N chunks.
  k_end = k * jnp.exp(b_last[:, :, :, None] - b)  # k_j decayed to the chunk's end
  dS = jnp.einsum('bhnck,bhncv->nbhkv', k_end, v)
  decay = jnp.moveaxis(jnp.exp(b_last), 2, 0)  # N B H K

  def step(S, inputs):
    decay_n, dS_n = inputs
    return decay_n[..., None] * S + dS_n, S
  S, S_before = jax.lax.scan(step, S, (decay, dS))  # S_before: N B H K V
  o = jnp.einsum('bhnck,nbhkv->bhncv', q * jnp.exp(b), S_before)

  # Within a chunk, between sub-chunks: keys of earlier sub-chunks, pivoted at the first token
  # of each query sub-chunk (both exponents <= 0; later keys masked before the exp).
  qs, ks, vs, bs = (a.reshape(B, H, N, M, c, a.shape[-1]) for a in (q, k, v, b))
  pivot = bs[:, :, :, :, :1]  # B H N M 1 K
  earlier = (jnp.arange(C) // c)[None, :] < jnp.arange(M)[:, None]  # M x C: key j before sub m
  rel = jnp.where(earlier[..., None], pivot - b[:, :, :, None], -jnp.inf)  # B H N M C K
  k_hat = k[:, :, :, None] * jnp.exp(rel)
  scores = jnp.einsum('bhnmik,bhnmjk->bhnmij', qs * jnp.exp(bs - pivot), k_hat)  # c x C
  o_intra = jnp.einsum('bhnmij,bhnjv->bhnmiv', scores, v)
  # Within a sub-chunk: exactly, pair by pair and channel by channel, in log space.
  causal = jnp.tril(jnp.ones((c, c), bool))
  pair = jnp.where(causal[..., None], bs[..., :, None, :] - bs[..., None, :, :], -jnp.inf)
  scores_diag = jnp.sum(qs[..., :, None, :] * jnp.exp(pair) * ks[..., None, :, :], axis=-1)
  o_intra = o_intra + jnp.einsum('bhnmij,bhnmjv->bhnmiv', scores_diag, vs)
  o = (o + o_intra.reshape(B, H, N, C, Vd))[:, :, :, :chunk_size]
  o = o.transpose(0, 2, 3, 1, 4).reshape(B, N * chunk_size, H, Vd)[:, :T]
  return o, S


def gla(q, k, v, log_a, S, config: GLAConfig):
  """The operator in the config's form (a call of one token: the recurrent step)."""
  if config.form == 'recurrent' or q.shape[1] == 1:
    return gla_recurrent(q, k, v, log_a, S)
  return gla_chunked(q, k, v, log_a, S, config.chunk_size, config.sub_chunk)


# --- The model.

def _normal(std):
  return nn.initializers.normal(std)


class GatedLinearAttention(nn.Module):
  """The paper's GLA layer: (u BxTxD, S BxHxKxV) -> (out BxTxD, S)."""
  config: GLAConfig

  @nn.compact
  def __call__(self, u_BxTxD, S):
    cfg = self.config
    (B, T, D), H, K, Vd, mm = u_BxTxD.shape, cfg.num_heads, cfg.d_k, cfg.d_v, cfg.matmul_dtype
    linear = lambda n, name, bias=False, std=STD: dense(
        n, mm, use_bias=bias, kernel_init=_normal(std), name=name)
    heads = lambda a, d: a.reshape(B, T, H, d)
    q = heads(linear(H * K, 'q_proj')(u_BxTxD), K) * K ** -0.5
    k = heads(linear(H * K, 'k_proj')(u_BxTxD), K)
    v = heads(linear(H * Vd, 'v_proj')(u_BxTxD), Vd)
    gate = linear(H * K, 'gate_up', bias=True)(linear(cfg.gate_rank, 'gate_down')(u_BxTxD))
    log_a = heads(jax.nn.log_sigmoid(gate) / TAU, K)
    o, S = gla(q, k, v, log_a, S, cfg)  # B x T x H x d_v
    scale = self.param('head_norm', nn.initializers.ones_init(), (H, Vd), jnp.float32)
    o = o * jax.lax.rsqrt(jnp.mean(jnp.square(o), axis=-1, keepdims=True) + NORM_EPS) * scale
    r = jax.nn.swish(linear(D, 'r_proj', bias=True)(u_BxTxD))
    out = linear(D, 'o_proj', std=STD / math.sqrt(2 * cfg.num_layers))(o.reshape(B, T, D) * r)
    return out, S


class SwiGLU(nn.Module):
  config: GLAConfig

  @nn.compact
  def __call__(self, u_BxTxD):
    cfg = self.config
    linear = lambda n, name, std=STD: dense(n, cfg.matmul_dtype, use_bias=False,
                                            kernel_init=_normal(std), name=name)
    h = jax.nn.swish(linear(cfg.ffn, 'gate_proj')(u_BxTxD)) * linear(cfg.ffn, 'up_proj')(u_BxTxD)
    return linear(cfg.width, 'down_proj', STD / math.sqrt(2 * cfg.num_layers))(h)


class GLALM(nn.Module):
  """(tokens BxT int, carry) -> (logits BxTxV float32, carry). Needs a 'dropout' rng when training.

  `dropout_rate`, if given, replaces `config.dropout` (it may be a traced value).
  """
  config: GLAConfig

  @nn.compact
  def __call__(self, tokens_BxT, carry, *, train: bool = False, dropout_rate=None):
    cfg = self.config
    rate = cfg.dropout if dropout_rate is None else dropout_rate
    embed = nn.Embed(cfg.vocab_size, cfg.width, embedding_init=_normal(STD), name='embedding')
    x = embed(tokens_BxT)
    new_carry = []
    for i in range(cfg.num_layers):
      h = nn.RMSNorm(epsilon=NORM_EPS, name=f'attn_norm_{i}')(x)
      h, S = GatedLinearAttention(cfg, name=f'attn_{i}')(h, carry[i]['S'])
      x = x + Dropout(rate)(h, deterministic=not train)
      h = SwiGLU(cfg, name=f'mlp_{i}')(nn.RMSNorm(epsilon=NORM_EPS, name=f'mlp_norm_{i}')(x))
      x = x + Dropout(rate)(h, deterministic=not train)
      new_carry.append({'S': S})
    x = nn.RMSNorm(epsilon=NORM_EPS, name='norm_f')(x)
    if cfg.tie_embeddings:
      logits = attend(embed, x, cfg.matmul_dtype)
    else:
      logits = dense(cfg.vocab_size, cfg.matmul_dtype, use_bias=False,
                     kernel_init=_normal(STD), name='lm_head')(x)
    return logits.astype(jnp.float32), tuple(new_carry)


def _matrices(config: GLAConfig) -> list[tuple[str, int, int]]:
  D, Kd, F, R = config.width, config.width // 2, config.ffn, config.gate_rank
  out = []
  for i in range(config.num_layers):
    a, m = f'attn_{i}', f'mlp_{i}'
    out += [(f'{a}/q_proj', D, Kd), (f'{a}/k_proj', D, Kd), (f'{a}/v_proj', D, D),
            (f'{a}/gate_down', D, R), (f'{a}/gate_up', R, Kd), (f'{a}/r_proj', D, D),
            (f'{a}/o_proj', D, D), (f'{m}/gate_proj', D, F), (f'{m}/up_proj', D, F),
            (f'{m}/down_proj', F, D)]
  head = 'embedding (tied head)' if config.tie_embeddings else 'lm_head'
  return out + [(head, D, config.vocab_size)]


def _extra_flops(config: GLAConfig) -> dict:
  """Training FLOPs per character of the operator (x3 its forward: backward ~2x forward).

  Per layer, head and character, forward. Recurrent: the decay diag(alpha) S (d_k d_v
  multiplies), k^T v (d_k d_v), the sum (d_k d_v), q S (2 d_k d_v): 5 d_k d_v. Chunked: q S_prev
  and the state's update sum_j k_j^T v_j (2 d_k d_v each; the per-chunk decay of S, d_k d_v /
  chunk_size, is left out), and the intra-chunk products as computed (masked entries included):
  scores against a chunk's C keys and their sum over values, 2 C (d_k + d_v), plus the exact
  sub-chunk of c keys, c (3 d_k + 2 d_v). The exps of the decays are O(d_k) and not counted.
  """
  L, H, K, Vd = config.num_layers, config.num_heads, config.d_k, config.d_v
  if config.form == 'recurrent':
    return {'state': 3 * L * H * 5 * K * Vd}
  C, c = config.chunk_size, config.sub_chunk
  return {'state': 3 * L * H * 4 * K * Vd,
          'intra_chunk': 3 * L * H * (2 * C * (K + Vd) + c * (3 * K + 2 * Vd))}


def _stub_scans() -> None:
  """The operator (both forms) replaced by elementwise work of the same inputs and shapes (the
  bench's --stub_scans profile)."""
  global gla

  def stub(q, k, v, log_a, S, config):
    del config
    o = v * jnp.sum(q * k * jnp.exp(log_a), axis=-1, keepdims=True)
    return o, S * jnp.exp(jnp.mean(log_a, axis=1))[..., None] + jnp.mean(o, axis=1)[:, :, None]
  gla = stub


def _describe(c: GLAConfig) -> str:
  form = c.form if c.form == 'recurrent' else f'chunked {c.chunk_size}/{c.sub_chunk}'
  return f'{c.num_layers}x{c.width} gla ({c.num_heads} heads, d_k {c.d_k}, d_v {c.d_v}, {form})'


_FIXED = dict(num_heads=4, gate_rank=16, ffn_width=0, tie_embeddings=False, dropout=0.0,
              form='chunked', chunk_size=16, sub_chunk_size=4)
MODEL = registry.register(registry.Model(
    name='gla', summary='Gated Linear Attention Transformer (Yang et al. 2023)',
    config_class=GLAConfig, module_class=GLALM, init_carry=init_carry, describe=_describe,
    matrices=_matrices, extra_flops=_extra_flops,
    state_size=lambda c, tokens: c.num_heads * c.d_k * c.d_v,
    # The tiny size's own values first: chunks of 4 in sub-chunks of 2, so that the conformance
    # suite's 12 tokens cross both boundaries; 5 and 3 pad each chunk to whole sub-chunks.
    equivalent={'form': ('chunked', 'recurrent'), 'chunk_size': (4, 5), 'sub_chunk_size': (2, 3)},
    free_fields=('dropout', 'form', 'chunk_size', 'sub_chunk_size', 'matmul_dtype'),
    stub_scans=_stub_scans,
    variants={'gla': registry.Variant(
        sizes={'tiny': dict(_FIXED, num_layers=2, num_heads=2, width=16, gate_rank=4,
                            chunk_size=4, sub_chunk_size=2),  # 9,088 parameters
               '0.8M': dict(_FIXED, num_layers=4, width=128),  # 834,176
               '5M': dict(_FIXED, num_layers=6, width=256)},  # 4,820,480
        config={'optim.learning_rate': 2e-3},
        doc=('Yang et al. 2023: Gated Linear Attention (4 heads, key dim width/2, value dim '
             'width, low-rank gate 16, tau 16, output gate, per-head RMSNorm) with a SwiGLU FFN '
             'in pre-RMSNorm blocks; checked against flash-linear-attention 0.5.2\'s '
             'naive_recurrent_gla.'))}))
