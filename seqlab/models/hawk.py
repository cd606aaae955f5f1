"""Hawk (De et al. 2024, "Griffin", arXiv:2402.19427): residual blocks around an RG-LRU.

`logits, carry = HawkLM(config).apply(params, tokens_BxT, carry)`: the same interface as
`char_rnn.CharLM`. The carry holds the whole state of every layer: the RG-LRU hidden state
`rg_lru` (B x L) and the Conv1D's last conv_width-1 inputs `conv` (B x (K-1) x L), so a
sequence cut into chunks with the carry passed along gives the logits of the whole sequence.

Followed: google-deepmind/recurrentgemma at commit ee7a5811881627f28c211735cc28e1bd3731fbb8,
`recurrentgemma/jax/layers.py` (RMSNorm, RGLRU, Conv1D, rnn_scan, lru_linear_scan,
lru_associative_scan, sqrt_bound_derivative, rnn_param_init), `modules.py` (RecurrentBlock,
MLPBlock, ResidualBlock, Embedder), `griffin.py` (Griffin) and `common.py` (GriffinConfig
defaults). Per layer (L = lru_width, K = conv_width):

  r = x + RecurrentBlock(RMSNorm(x));   x' = r + MLP(RMSNorm(r))
  RecurrentBlock(u) = Linear_out(GeLU(Linear_y(u)) * RGLRU(Conv1D(Linear_x(u))))
  RGLRU: r_t = sigmoid(W_a x_t + b_a), i_t = sigmoid(W_x x_t + b_x),
         log a_t = -c * r_t * softplus(a_param) with c = 8, i.e. the paper's a_t = a^(c r_t)
         with a = sigmoid(Lambda), Lambda = -a_param; h_t = a_t h_{t-1} + sqrt(1 - a_t^2) i_t x_t
  MLP(u) = Linear_down(GeLU(u W_up0 + b0) * (u W_up1 + b1)),  width -> mlp_expansion * width
  RMSNorm(u) = u / sqrt(mean(u^2) + 1e-6) * (1 + scale), scale initialised to 0
  Embedding scaled by sqrt(width) (as the reference's `embeddings_scale_by_sqrt_dim`); the
  decoder is the embedding transposed (tied, as the reference), after a final RMSNorm, and the
  logits are soft-capped: 30 * tanh(logits / 30) (the reference's default).
  GeLU is jax.nn.gelu (tanh approximation), as in the reference. Initialisers as the reference:
  a = sigmoid(-a_param) uniform by area on the ring [0.9, 0.999]; kernels normal with
  variance 1 / fan_in, except the last layer of each block (linear_out, ffw_down): 2 / (fan_in *
  num_layers), and the Conv1D: 0.01 / K; biases and RMSNorm scales zero.

Deviations from the reference:
- Hawk is the pure-recurrent variant: every block is recurrent (no local attention).
- The RG-LRU gates are dense L x L matrices (the reference's BlockDiagonalLinear with one block;
  there is no num_heads).
- Resets: the reference resets the RG-LRU (a = 0, input factor 1 instead of sqrt(1 - a^2)) and
  masks the Conv1D wherever segment_pos == 0, which includes the first token of every call
  without a cache. Here a call continues its carry; it resets only where the optional
  `reset_BxT` is True (same equations). So a zero carry without a reset differs from the
  reference's fresh start only by the sqrt(1 - a^2) factor of the first step.
- The Conv1D takes its state for chunks of any length (the reference: one token at a time).
- The sqrt(width) embedding scale is float32 (the reference rounds it to bfloat16).
- Dropout (not in the reference): on the output of the recurrent and the MLP block, before each
  residual addition. No remat, no Pallas kernel.
- Precision: float32 by default. `matmul_dtype='bfloat16'` (precision.py, the zoo's
  rule): every matmul (linear_x, linear_y, linear_out, the RG-LRU's two gates, both MLP
  matmuls, the tied decoder) takes bf16 inputs and kernel and returns float32; the embedding,
  the RMSNorms, the Conv1D and its state, the gate arithmetic, the scan, the carry, the soft-cap
  and the parameters stay float32.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqlab.errors import SeqlabError
from seqlab.models.layers import Dropout
from seqlab.models.precision import check_matmul_dtype, dense, einsum
from seqlab.models import registry

SCANS = ('sequential', 'associative')
SOFT_CAP = 30.0  # common.GriffinConfig.logits_soft_cap
C = 8.0  # the RG-LRU's constant c


@dataclasses.dataclass(frozen=True)
class HawkConfig:
  vocab_size: int
  num_layers: int = 2
  width: int = 128
  lru_width: int = 0  # 0: the same as width
  conv_width: int = 4  # temporal width K of the causal Conv1D
  mlp_expansion: int = 3  # MLP hidden width = mlp_expansion * width
  dropout: float = 0.0
  scan: str = 'sequential'  # 'sequential' (lax.scan) or 'associative' (lax.associative_scan)
  # 'bfloat16': bf16 matmul inputs, fp32 accumulation, scan, state, params and loss (GPU/TPU).
  matmul_dtype: str = 'float32'

  def __post_init__(self):
    for name, least in (('vocab_size', 1), ('num_layers', 1), ('width', 1), ('lru_width', 0),
                        ('conv_width', 1), ('mlp_expansion', 1)):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise SeqlabError(f'model.{name} must be an integer >= {least}, got {value!r}')
    if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
      raise SeqlabError(f'model.dropout must be in [0, 1), got {self.dropout!r}')
    if self.scan not in SCANS:
      raise SeqlabError(f'model.scan must be one of {SCANS}, got {self.scan!r}')
    check_matmul_dtype(self.matmul_dtype)

  @property
  def lru(self) -> int:
    return self.lru_width or self.width

  @classmethod
  def from_config(cls, model_config, vocab_size: int) -> 'HawkConfig':
    fields = {f.name for f in dataclasses.fields(cls)} - {'vocab_size'}
    return cls(vocab_size=vocab_size, **{k: v for k, v in model_config.items() if k in fields})


def init_carry(config: HawkConfig, batch_size: int):
  """The zero state: a tuple with one {'conv': B x (K-1) x L, 'rg_lru': B x L} per layer."""
  return tuple({'conv': jnp.zeros((batch_size, config.conv_width - 1, config.lru), jnp.float32),
                'rg_lru': jnp.zeros((batch_size, config.lru), jnp.float32)}
               for _ in range(config.num_layers))


def _fan_in(scale=1.0, **kw):
  return nn.initializers.variance_scaling(scale, 'fan_in', 'normal', **kw)


def _ring_init(min_rad=0.9, max_rad=0.999, eps=1e-8):
  """a_param with sigmoid(-a_param) = exp(-softplus(a_param)) uniform (by area) on the ring."""
  def init(key, shape, dtype=jnp.float32):
    unif = jax.random.uniform(key, shape)
    a_real = 0.5 * jnp.log(unif * (max_rad ** 2 - min_rad ** 2) + min_rad ** 2 + eps)
    return jnp.log(jnp.exp(-a_real) - 1.0).astype(dtype)  # softplus^-1(-log a)
  return init


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _sqrt_bounded_grad(x, max_grad):
  """sqrt(x) whose derivative is at most `max_grad` (the reference's sqrt_bound_derivative)."""
  del max_grad
  return jnp.sqrt(x)


def _sqrt_fwd(x, max_grad):
  del max_grad
  return jnp.sqrt(x), x


def _sqrt_bwd(max_grad, x, g):
  return (g * 0.5 / jnp.sqrt(jnp.maximum(x, 1.0 / (4.0 * max_grad ** 2))),)


_sqrt_bounded_grad.defvjp(_sqrt_fwd, _sqrt_bwd)


def linear_scan(a_BxTxL, b_BxTxL, h_BxL, scan: str):
  """h_t = a_t * h_{t-1} + b_t from h_{-1} = h: (h_BxTxL, h_last_BxL), either form."""
  if scan == 'sequential':
    def step(h, ab):
      h = ab[0] * h + ab[1]
      return h, h
    h_last, h_TxBxL = jax.lax.scan(step, h_BxL, (jnp.swapaxes(a_BxTxL, 0, 1),
                                                  jnp.swapaxes(b_BxTxL, 0, 1)))
    return jnp.swapaxes(h_TxBxL, 0, 1), h_last
  # Fold the carried state into the first input: b_0 + a_0 h_{-1}; then a prefix scan of the
  # affine maps h -> a h + b, composed as (a_i, b_i) then (a_j, b_j) = (a_j a_i, a_j b_i + b_j).
  b_BxTxL = b_BxTxL.at[:, 0].add(a_BxTxL[:, 0] * h_BxL)
  compose = lambda e_i, e_j: (e_j[0] * e_i[0], e_j[0] * e_i[1] + e_j[1])
  _, h_BxTxL = jax.lax.associative_scan(compose, (a_BxTxL, b_BxTxL), axis=1)
  return h_BxTxL, h_BxTxL[:, -1]


class RMSNorm(nn.Module):
  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', nn.initializers.zeros_init(), (x.shape[-1],))
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + 1e-6) * (1 + scale)


class Conv1D(nn.Module):
  """Causal depthwise convolution over time: y_t = b + sum_s w[K-1-s] * x_{t-s}.

  `state_BxKm1xL` holds x_{-K+1} .. x_{-1} (the carry); inputs before a reset are masked
  (they belong to the previous document), and the returned state is masked alike.
  """
  temporal_width: int

  @nn.compact
  def __call__(self, x_BxTxL, state_BxKm1xL, reset_BxT=None):
    K, T, L = self.temporal_width, x_BxTxL.shape[1], x_BxTxL.shape[2]
    w_KxL = self.param('w', _fan_in(0.01), (K, L))
    b_L = self.param('b', nn.initializers.zeros_init(), (L,))
    full_BxNxL = jnp.concatenate([state_BxKm1xL, x_BxTxL], axis=1)  # N = K-1+T
    if reset_BxT is not None:  # segment id of every position: state 0, +1 at each reset
      seg_BxN = jnp.concatenate([jnp.zeros((x_BxTxL.shape[0], K - 1), jnp.int32),
                                 jnp.cumsum(reset_BxT.astype(jnp.int32), axis=1)], axis=1)
    y_BxTxL = jnp.broadcast_to(b_L, x_BxTxL.shape)
    for shift in range(K):
      window_BxTxL = full_BxNxL[:, K - 1 - shift:K - 1 - shift + T]  # x_{t-shift}
      if reset_BxT is not None:
        same = seg_BxN[:, K - 1 - shift:K - 1 - shift + T] == seg_BxN[:, K - 1:]
        window_BxTxL = window_BxTxL * same[..., None]
      y_BxTxL = y_BxTxL + window_BxTxL * w_KxL[K - 1 - shift]
    new_state_BxKm1xL = full_BxNxL[:, T:]
    if reset_BxT is not None:
      new_state_BxKm1xL *= (seg_BxN[:, T:] == seg_BxN[:, -1:])[..., None]
    return y_BxTxL, new_state_BxKm1xL


class RGLRU(nn.Module):
  """The Real-Gated Linear Recurrent Unit: (x BxTxL, h BxL) -> (h_t for every t, h_last)."""
  scan: str
  matmul_dtype: str = 'float32'  # the two gates'; the recurrence is float32 either way

  @nn.compact
  def __call__(self, x_BxTxL, h_BxL, reset_BxT=None):
    L = x_BxTxL.shape[-1]
    a_param_L = self.param('a_param', _ring_init(), (L,))
    gate_x = jax.nn.sigmoid(dense(L, self.matmul_dtype, kernel_init=_fan_in(),
                                  name='input_gate')(x_BxTxL))
    gate_a = jax.nn.sigmoid(dense(L, self.matmul_dtype, kernel_init=_fan_in(),
                                  name='a_gate')(x_BxTxL))
    log_a_BxTxL = -C * gate_a * jax.nn.softplus(a_param_L)
    a_BxTxL = jnp.exp(log_a_BxTxL)
    # Bounded derivative: sqrt'(1 - a^2) is infinite at a = 1 (the reference clips it at 1000).
    norm_BxTxL = _sqrt_bounded_grad(1 - jnp.exp(2 * log_a_BxTxL), 1000.0)
    if reset_BxT is not None:  # a new document: forget h, and do not normalise the input
      a_BxTxL = jnp.where(reset_BxT[..., None], 0.0, a_BxTxL)
      norm_BxTxL = jnp.where(reset_BxT[..., None], 1.0, norm_BxTxL)
    return linear_scan(a_BxTxL, x_BxTxL * gate_x * norm_BxTxL, h_BxL, self.scan)


class RecurrentBlock(nn.Module):
  config: HawkConfig

  @nn.compact
  def __call__(self, x_BxTxD, carry, reset_BxT=None):
    cfg = self.config
    out_init = _fan_in(2.0 / cfg.num_layers)
    mm = cfg.matmul_dtype
    y_BxTxL = jax.nn.gelu(dense(cfg.lru, mm, kernel_init=_fan_in(), name='linear_y')(x_BxTxD))
    u_BxTxL = dense(cfg.lru, mm, kernel_init=_fan_in(), name='linear_x')(x_BxTxD)
    u_BxTxL, conv = Conv1D(cfg.conv_width, name='conv_1d')(u_BxTxL, carry['conv'], reset_BxT)
    u_BxTxL, h_BxL = RGLRU(cfg.scan, mm, name='rg_lru')(u_BxTxL, carry['rg_lru'], reset_BxT)
    self.sow('intermediates', 'h', u_BxTxL)  # seqlab.neurons: the RG-LRU state after each step
    out_BxTxD = dense(cfg.width, mm, kernel_init=out_init, name='linear_out')(u_BxTxL * y_BxTxL)
    return out_BxTxD, {'conv': conv, 'rg_lru': h_BxL}


class MLPBlock(nn.Module):
  """Gated MLP: ffw_down(GeLU(x W_up[0] + b[0]) * (x W_up[1] + b[1]))."""
  config: HawkConfig

  @nn.compact
  def __call__(self, x_BxTxD):
    cfg = self.config
    hidden = cfg.mlp_expansion * cfg.width
    w_2xDxH = self.param('ffw_up_w', _fan_in(in_axis=1), (2, cfg.width, hidden))
    b_2xH = self.param('ffw_up_b', nn.initializers.zeros_init(), (2, hidden))
    up_2xBxTxH = einsum('btd,cdh->cbth', x_BxTxD, w_2xDxH, cfg.matmul_dtype) + \
        b_2xH[:, None, None]
    gated_BxTxH = jax.nn.gelu(up_2xBxTxH[0]) * up_2xBxTxH[1]
    return dense(cfg.width, cfg.matmul_dtype, kernel_init=_fan_in(2.0 / cfg.num_layers),
                 name='ffw_down')(gated_BxTxH)


class HawkLM(nn.Module):
  """(tokens BxT int, carry) -> (logits BxTxV float32, carry). Needs a 'dropout' rng when training.

  `dropout_rate`, if given, replaces `config.dropout` (it may be a traced value).
  `reset_BxT` (bool, optional): True where a new document starts; the state is forgotten there.
  """
  config: HawkConfig

  @nn.compact
  def __call__(self, tokens_BxT, carry, *, train: bool = False, dropout_rate=None,
               reset_BxT=None):
    cfg = self.config
    rate = cfg.dropout if dropout_rate is None else dropout_rate
    embed_VxD = self.param('embed', _fan_in(in_axis=1, out_axis=0), (cfg.vocab_size, cfg.width))
    x_BxTxD = jnp.take(embed_VxD, tokens_BxT, axis=0) * jnp.sqrt(jnp.float32(cfg.width))
    new_carry = []
    for i in range(cfg.num_layers):
      h_BxTxD, layer_carry = RecurrentBlock(cfg, name=f'recurrent_{i}')(
          RMSNorm(name=f'temporal_pre_norm_{i}')(x_BxTxD), carry[i], reset_BxT)
      x_BxTxD = x_BxTxD + Dropout(rate)(h_BxTxD, deterministic=not train)
      h_BxTxD = MLPBlock(cfg, name=f'mlp_{i}')(RMSNorm(name=f'channel_pre_norm_{i}')(x_BxTxD))
      x_BxTxD = x_BxTxD + Dropout(rate)(h_BxTxD, deterministic=not train)
      new_carry.append(layer_carry)
    x_BxTxD = RMSNorm(name='final_norm')(x_BxTxD)
    logits_BxTxV = einsum('btd,vd->btv', x_BxTxD, embed_VxD, cfg.matmul_dtype)
    return SOFT_CAP * jnp.tanh(logits_BxTxV / SOFT_CAP), tuple(new_carry)


def _matrices(config: HawkConfig) -> list[tuple[str, int, int]]:
  D, L, M = config.width, config.lru, config.mlp_expansion * config.width
  out = []
  for i in range(config.num_layers):
    out += [(f'recurrent_{i}/linear_y', D, L), (f'recurrent_{i}/linear_x', D, L),
            (f'recurrent_{i}/rg_lru/input_gate', L, L), (f'recurrent_{i}/rg_lru/a_gate', L, L),
            (f'recurrent_{i}/linear_out', L, D), (f'mlp_{i}/ffw_up_w[0]', D, M),
            (f'mlp_{i}/ffw_up_w[1]', D, M), (f'mlp_{i}/ffw_down', M, D)]
  return out + [('embed (tied head)', D, config.vocab_size)]


def _stub_scans() -> None:
  """The scan replaced by elementwise work of the same inputs and shapes (bench profile)."""
  global linear_scan

  def stub(a_BxTxL, b_BxTxL, h_BxL, scan):
    del scan
    h_BxTxL = a_BxTxL * h_BxL[:, None] + b_BxTxL
    return h_BxTxL, h_BxTxL[:, -1]
  linear_scan = stub


_FIXED = dict(lru_width=0, conv_width=4, mlp_expansion=3, dropout=0.0, scan='sequential')
MODEL = registry.register(registry.Model(
    name='hawk', summary="RG-LRU in Griffin's Hawk blocks (De et al. 2024)",
    config_class=HawkConfig, module_class=HawkLM, init_carry=init_carry,
    describe=lambda c: f'{c.num_layers}x{c.width} hawk (RG-LRU {c.lru})',
    matrices=_matrices, state_size=lambda c, tokens: c.conv_width * c.lru,  # h, K-1 conv inputs
    neuron_states=lambda c: {'h': c.lru},
    recorded_states=lambda c, inter: [(layer, 'h', inter[f'recurrent_{layer}']['h'][0][0])
                                      for layer in range(c.num_layers)],  # batch-major
    equivalent={'scan': SCANS}, free_fields=('dropout', 'scan', 'matmul_dtype'),
    stub_scans=_stub_scans,
    variants={'hawk': registry.Variant(
        sizes={'tiny': dict(_FIXED, num_layers=2, width=16),
               '0.8M': dict(_FIXED, num_layers=2, width=168),  # 808,080 parameters
               '5M': dict(_FIXED, num_layers=4, width=296)},  # 4,949,712
        config={'optim.learning_rate': 2e-3},
        doc=('De et al. 2024 (Griffin\'s Hawk): RG-LRU + Conv1D(4) recurrent block, gated 3x '
             'MLP, RMSNorm, following google-deepmind/recurrentgemma. Measured (2-core CPU, '
             '4,900 steps): best val loss 1.5079 at step 4,000 (stream), 1.5464 +- 0.0136 over '
             'windows of 256; it overfits without dropout.'))}))
