"""Mamba (Gu and Dao 2023, arXiv:2312.00752): residual blocks around a selective SSM.

`logits, carry = MambaLM(config).apply(params, tokens_BxT, carry)`: the same interface as
`char_rnn.CharLM`. The carry holds the whole state of every layer: the SSM state `ssm`
(B x E x N) and the causal conv's last d_conv-1 inputs `conv` (B x (K-1) x E), so a sequence cut
into chunks with the carry passed along gives the logits of the whole sequence, and sampling
one token at a time is the same call with T = 1.

Followed: state-spaces/mamba, `mamba_ssm/modules/mamba_simple.py` (Mamba.__init__, the
non-fused path of Mamba.forward, Mamba.step), `mamba_ssm/ops/selective_scan_interface.py`
(selective_scan_ref) and `mamba_ssm/models/mixer_seq_simple.py` (MixerModel, create_block,
_init_weights, MambaLMHeadModel). Per layer (D = width, E = expand * D, N = d_state, R = dt_rank,
K = d_conv):

  x' = x + Mixer(RMSNorm(x))       (the reference's Block: Add -> Norm -> Mixer, the same sums)
  Mixer(u): (x, z) = in_proj(u) (D -> 2E, no bias); x = SiLU(causal depthwise conv_K(x) + b)
            (dt_raw, B, C) = x_proj(x) (E -> R + 2N, no bias); delta = softplus(dt_proj(dt_raw))
            A = -exp(A_log); h_t = exp(delta_t A) * h_{t-1} + delta_t B_t x_t  (ZOH for A,
            Euler for B, as selective_scan_ref); y_t = C_t . h_t + D_skip * x_t
            out = out_proj(y * SiLU(z))   (E -> D, no bias)
  logits = RMSNorm_f(x) @ embedding^T   (the LM head is tied to the embedding, as the
            reference's MambaLMHeadModel.tie_weights; no bias)
  RMSNorm(u) = u / sqrt(mean(u^2) + 1e-5) * weight, weight initialised to 1 (rms_norm=True as
            config_mamba.MambaConfig; MixerModel's own default is LayerNorm).

Initialisers as the reference: the embedding normal(0.02); in_proj, x_proj and out_proj
PyTorch's Linear default, uniform(+-1/sqrt(fan_in)), out_proj then divided by sqrt(num_layers)
(_init_weights' rescale_prenorm_residual); dt_proj's kernel uniform(+-R^-0.5) and its bias the
inverse softplus of dt, log-uniform in [0.001, 0.1] floored at 1e-4; A_log = log(1..N) for every
channel (S4D-real); D_skip = 1; the conv's kernel and bias PyTorch's Conv1d default,
uniform(+-1/sqrt(K)).

Deviations from the reference:
- Dropout (not in the reference): on each mixer's output before the residual addition.
- No fused kernels; the residual stream is float32 (so residual_in_fp32 holds trivially); the
  vocabulary is not padded to a multiple of 8 (config_mamba's pad_vocab_size_multiple).
- Precision: float32 by default. `matmul_dtype='bfloat16'` (precision.py, the zoo's
  rule): in_proj, x_proj, dt_proj, out_proj and the tied LM head take bf16 inputs and kernel
  and return float32; the embedding, the RMSNorms, the conv and its state, softplus, the
  selective scan (its C . h readout and D skip included, in float32 as selective_scan_ref
  computes), the carry and the parameters stay float32.
- The reference continues a state one token at a time only (Mamba.step, after a prefill from
  zeros); here every call, of any length, continues its carry (conv inputs and SSM state). The
  conv state is the last K-1 inputs, B x (K-1) x E (the reference's step keeps B x E x K).
- scan='associative' materialises (a, b) pairs of shape B x T x E x N for the whole sequence
  (and its backward keeps several such arrays): E * N = 32 * width floats per token per layer
  with the defaults, memory-heavy for long sequences. scan='sequential' forms them one step at
  a time inside the lax.scan (autodiff still stores the B x E x N state of every step).
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqlab.errors import SeqlabError
from seqlab.models.layers import CausalConv1D, Dropout, torch_linear, uniform
from seqlab.models.precision import attend, check_matmul_dtype, dense
from seqlab.models import registry

SCANS = ('sequential', 'associative')
DT_MIN, DT_MAX, DT_INIT_FLOOR = 0.001, 0.1, 1e-4  # Mamba.__init__ defaults
NORM_EPS = 1e-5  # create_block's norm_epsilon


@dataclasses.dataclass(frozen=True)
class MambaConfig:
  vocab_size: int
  num_layers: int = 2
  width: int = 128  # d_model
  d_state: int = 16  # N
  d_conv: int = 4  # K, the causal conv's width
  expand: int = 2  # d_inner = expand * width
  dt_rank: int = 0  # 0: ceil(width / 16), the reference's 'auto'
  dropout: float = 0.0
  scan: str = 'sequential'  # 'sequential' (lax.scan) or 'associative' (lax.associative_scan)
  # 'bfloat16': bf16 matmul inputs, fp32 accumulation, scan, state, params and loss (GPU/TPU).
  matmul_dtype: str = 'float32'

  def __post_init__(self):
    for name, least in (('vocab_size', 1), ('num_layers', 1), ('width', 1), ('d_state', 1),
                        ('d_conv', 1), ('expand', 1), ('dt_rank', 0)):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise SeqlabError(f'model.{name} must be an integer >= {least}, got {value!r}')
    if (not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool)
        or not 0.0 <= self.dropout < 1.0):
      raise SeqlabError(f'model.dropout must be in [0, 1), got {self.dropout!r}')
    if self.scan not in SCANS:
      raise SeqlabError(f'model.scan must be one of {SCANS}, got {self.scan!r}')
    check_matmul_dtype(self.matmul_dtype)

  @property
  def d_inner(self) -> int:
    return self.expand * self.width

  @property
  def rank(self) -> int:
    return self.dt_rank or math.ceil(self.width / 16)

  @classmethod
  def from_config(cls, model_config, vocab_size: int) -> 'MambaConfig':
    fields = {f.name for f in dataclasses.fields(cls)} - {'vocab_size'}
    return cls(vocab_size=vocab_size, **{k: v for k, v in model_config.items() if k in fields})


def init_carry(config: MambaConfig, batch_size: int):
  """The zero state: a tuple with one {'conv': B x (K-1) x E, 'ssm': B x E x N} per layer."""
  E = config.d_inner
  return tuple({'conv': jnp.zeros((batch_size, config.d_conv - 1, E), jnp.float32),
                'ssm': jnp.zeros((batch_size, E, config.d_state), jnp.float32)}
               for _ in range(config.num_layers))


def _dt_bias(key, shape, dtype=jnp.float32):
  """softplus^-1(dt) with dt log-uniform in [DT_MIN, DT_MAX], at least DT_INIT_FLOOR."""
  log_dt = jax.random.uniform(key, shape) * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN)
  dt = jnp.maximum(jnp.exp(log_dt), DT_INIT_FLOOR)
  return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)


def _a_log(key, shape, dtype=jnp.float32):
  del key  # S4D-real: A = -(1, 2, ..., N) for every channel
  return jnp.broadcast_to(jnp.log(jnp.arange(1, shape[1] + 1, dtype=dtype)), shape)


def selective_scan(u_BxTxE, delta_BxTxE, A_ExN, B_BxTxN, C_BxTxN, D_E, h_BxExN, scan: str):
  """selective_scan_ref (delta already softplus'ed, no z) from the state h_BxExN.

  h_t = exp(delta_t A) * h_{t-1} + delta_t B_t u_t (B x E x N); y_t = C_t . h_t + D u_t.
  Returns (y_BxTxE, h_last_BxExN).
  """
  if scan == 'sequential':  # (a, b) of one step at a time: O(B E N) memory besides autodiff's
    def step(h_BxExN, inputs):
      u_BxE, delta_BxE, B_BxN, C_BxN = inputs
      h_BxExN = (jnp.exp(delta_BxE[..., None] * A_ExN) * h_BxExN
                 + (delta_BxE * u_BxE)[..., None] * B_BxN[:, None, :])
      return h_BxExN, jnp.einsum('ben,bn->be', h_BxExN, C_BxN)
    time_major = lambda a: jnp.swapaxes(a, 0, 1)
    h_BxExN, y_TxBxE = jax.lax.scan(
        step, h_BxExN, tuple(map(time_major, (u_BxTxE, delta_BxTxE, B_BxTxN, C_BxTxN))))
    y_BxTxE = time_major(y_TxBxE)
  elif scan == 'associative':
    a_BxTxExN = jnp.exp(delta_BxTxE[..., None] * A_ExN)
    b_BxTxExN = (delta_BxTxE * u_BxTxE)[..., None] * B_BxTxN[:, :, None, :]
    # Fold the carried state into the first step (b_0 += a_0 h_{-1}), then a prefix scan of the
    # affine maps h -> a h + b: (a_i, b_i) then (a_j, b_j) = (a_j a_i, a_j b_i + b_j).
    b_BxTxExN = b_BxTxExN.at[:, 0].add(a_BxTxExN[:, 0] * h_BxExN)
    compose = lambda e_i, e_j: (e_j[0] * e_i[0], e_j[0] * e_i[1] + e_j[1])
    _, hs_BxTxExN = jax.lax.associative_scan(compose, (a_BxTxExN, b_BxTxExN), axis=1)
    y_BxTxE = jnp.einsum('bten,btn->bte', hs_BxTxExN, C_BxTxN)
    h_BxExN = hs_BxTxExN[:, -1]
  else:
    raise SeqlabError(f'model.scan must be one of {SCANS}, got {scan!r}')
  return y_BxTxE + u_BxTxE * D_E, h_BxExN


class MambaMixer(nn.Module):
  """The Mamba mixer (mamba_simple.Mamba): (u BxTxD, carry) -> (out BxTxD, carry)."""
  config: MambaConfig

  @nn.compact
  def __call__(self, u_BxTxD, carry):
    cfg = self.config
    E, N, R, mm = cfg.d_inner, cfg.d_state, cfg.rank, cfg.matmul_dtype
    xz_BxTx2E = dense(2 * E, mm, use_bias=False, kernel_init=torch_linear(),
                      name='in_proj')(u_BxTxD)
    x_BxTxE, z_BxTxE = jnp.split(xz_BxTx2E, 2, axis=-1)
    x_BxTxE, conv_state = CausalConv1D(cfg.d_conv, name='conv1d')(x_BxTxE, carry['conv'])
    x_BxTxE = jax.nn.silu(x_BxTxE)
    dbc_BxTxM = dense(R + 2 * N, mm, use_bias=False, kernel_init=torch_linear(),
                      name='x_proj')(x_BxTxE)  # M = R + 2N
    dt_BxTxR, B_BxTxN, C_BxTxN = jnp.split(dbc_BxTxM, [R, R + N], axis=-1)
    delta_BxTxE = jax.nn.softplus(dense(E, mm, kernel_init=uniform(R ** -0.5),
                                        bias_init=_dt_bias, name='dt_proj')(dt_BxTxR))
    A_ExN = -jnp.exp(self.param('A_log', _a_log, (E, N)))
    D_E = self.param('D', nn.initializers.ones_init(), (E,))
    y_BxTxE, ssm_state = selective_scan(x_BxTxE, delta_BxTxE, A_ExN, B_BxTxN, C_BxTxN, D_E,
                                        carry['ssm'], cfg.scan)
    out_BxTxD = dense(cfg.width, mm, use_bias=False, kernel_init=torch_linear(
        1 / math.sqrt(cfg.num_layers)), name='out_proj')(y_BxTxE * jax.nn.silu(z_BxTxE))
    return out_BxTxD, {'conv': conv_state, 'ssm': ssm_state}


class MambaLM(nn.Module):
  """(tokens BxT int, carry) -> (logits BxTxV float32, carry). Needs a 'dropout' rng when training.

  `dropout_rate`, if given, replaces `config.dropout` (it may be a traced value).
  """
  config: MambaConfig

  @nn.compact
  def __call__(self, tokens_BxT, carry, *, train: bool = False, dropout_rate=None):
    cfg = self.config
    rate = cfg.dropout if dropout_rate is None else dropout_rate
    embed = nn.Embed(cfg.vocab_size, cfg.width, embedding_init=nn.initializers.normal(0.02),
                     name='embedding')
    x_BxTxD = embed(tokens_BxT)
    new_carry = []
    for i in range(cfg.num_layers):
      h_BxTxD = nn.RMSNorm(epsilon=NORM_EPS, name=f'norm_{i}')(x_BxTxD)
      h_BxTxD, layer_carry = MambaMixer(cfg, name=f'mixer_{i}')(h_BxTxD, carry[i])
      x_BxTxD = x_BxTxD + Dropout(rate)(h_BxTxD, deterministic=not train)
      new_carry.append(layer_carry)
    x_BxTxD = nn.RMSNorm(epsilon=NORM_EPS, name='norm_f')(x_BxTxD)
    logits_BxTxV = attend(embed, x_BxTxD, cfg.matmul_dtype)  # tied LM head
    return logits_BxTxV.astype(jnp.float32), tuple(new_carry)


def _matrices(config: MambaConfig) -> list[tuple[str, int, int]]:
  D, E, N, R = config.width, config.d_inner, config.d_state, config.rank
  out = []
  for i in range(config.num_layers):
    out += [(f'mixer_{i}/in_proj', D, 2 * E), (f'mixer_{i}/x_proj', E, R + 2 * N),
            (f'mixer_{i}/dt_proj', R, E), (f'mixer_{i}/out_proj', E, D)]
  return out + [('embedding (tied head)', D, config.vocab_size)]


SCAN_FORWARD_FLOPS = 7  # per (E, N) element, character and layer: exp(delta A) 2 (exp as one),
#                         (delta u) B 1, a h + b 2, C . h 2; training ~3x (backward ~2x forward)


def _extra_flops(config: MambaConfig) -> dict:
  return {'scan': 3 * SCAN_FORWARD_FLOPS * config.num_layers * config.d_inner * config.d_state}


def _stub_scans() -> None:
  """The scan replaced by elementwise work of the same inputs and shapes (bench profile)."""
  global selective_scan

  def stub(u_BxTxE, delta_BxTxE, A_ExN, B_BxTxN, C_BxTxN, D_E, h_BxExN, scan):
    del scan
    bc_BxTx1 = jnp.sum(B_BxTxN * C_BxTxN, axis=-1, keepdims=True)
    y_BxTxE = delta_BxTxE * u_BxTxE * bc_BxTx1 + jnp.sum(A_ExN, axis=-1)
    return y_BxTxE + u_BxTxE * D_E, h_BxExN + jnp.mean(y_BxTxE, axis=1)[..., None]
  selective_scan = stub


_FIXED = dict(d_state=16, d_conv=4, expand=2, dt_rank=0, dropout=0.0, scan='sequential')
MODEL = registry.register(registry.Model(
    name='mamba', summary='selective SSM in Mamba blocks (Gu and Dao 2023)',
    config_class=MambaConfig, module_class=MambaLM,
    init_carry=init_carry,
    describe=lambda c: (f'{c.num_layers}x{c.width} mamba (d_inner {c.d_inner}, '
                        f'd_state {c.d_state})'),
    matrices=_matrices, extra_flops=_extra_flops,
    state_size=lambda c, tokens: c.d_inner * c.d_state + (c.d_conv - 1) * c.d_inner,
    equivalent={'scan': SCANS}, free_fields=('dropout', 'scan', 'matmul_dtype'),
    stub_scans=_stub_scans,
    memory_bound=True,  # its scan: the bench measures memory bandwidth beside its rows
    variants={'mamba': registry.Variant(
        sizes={'tiny': dict(_FIXED, num_layers=2, width=16),
               '0.8M': dict(_FIXED, num_layers=4, width=168),  # 792,624 parameters
               '5M': dict(_FIXED, num_layers=8, width=304)},  # 4,910,816
        config={'optim.learning_rate': 2e-3},
        doc=('Gu and Dao 2023: Mamba blocks (expand 2, d_state 16, conv 4, dt_rank width/16) '
             'with RMSNorm, no MLP, following state-spaces/mamba mamba_simple.py. Measured '
             '(2-core CPU, 4,900 steps, 2026-12-01): best val loss 1.5250 at step 3,000 '
             '(stream; 1.5613 over windows of 256 there), then it overfits: 1.5693 (stream), '
             '1.6180 +- 0.0149 (windows) at 4,900.'))}))
