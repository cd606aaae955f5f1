"""minGRU and minLSTM language models (Feng et al. 2024, "Were RNNs All We Needed?").

`logits, carry = model.apply(params, tokens, carry)`, as `char_rnn.CharLM`: training with
carried state, evaluation and one-symbol sampling share one code path.

Model: embedding -> `num_layers` x block -> RMSNorm -> decoder, where a block is
  x = x + Dropout(OutProj(MinRNN(Conv(RMSNorm(x)))))  OutProj: hidden -> width (none if equal)
  x = x + Dropout(MLP(RMSNorm(x)))                    MLP: width -> mlp_ratio*width, GELU -> width
(pre-norm residual; no MLP sub-block when mlp_ratio == 0; dropout also on the embedding).

Conv (`conv_width` K; 0, the default: none, Conv is the identity and the parameters and carry
are those of a model without the option): a causal depthwise convolution of width K over time,
y_t = b + sum_k w[k] ⊙ u_{t-K+1+k} (per channel, width D), of the normalised block input u, whose
output is what the min-RNN's one gate/candidate Dense reads. It is `layers.CausalConv1D` (the
same function as hawk.py's Conv1D; this one's initialiser is PyTorch's Conv1d default,
uniform(±1/sqrt(K)) for kernel and bias, as a PyTorch model would have). Feng et al. (2024,
appendix) describe their language-model block only as "Conv4 -> minRNN -> MLP" with residual
connections, normalisation and a down-projection; this placement (inside the min-RNN's residual
branch, after its RMSNorm, no activation and no residual or norm of its own) follows that order
as far as the paper states it; the rest is our choice. The carry then holds each layer's last
K-1 conv inputs (as Hawk and Mamba do), so chunks with the carry passed along are one sequence.

The recurrence. Gates depend on the input only, so the layer is linear in its state:
  minGRU:  z = σ(k_z), h_t = (1 - z) ⊙ h_{t-1} + z ⊙ v                = a_t ⊙ h_{t-1} + b_t
  minLSTM: f = σ(k_f), i = σ(k_i), f' = f/(f+i), i' = i/(f+i), h_t = f' ⊙ h_{t-1} + i' ⊙ v
with [k_z | h̃] (minGRU) or [k_f | k_i | h̃] (minLSTM) = one Dense of x_t (kernel D x G*H,
blocks in that order). Two MODELS (`log_space`), different functions of the parameters:
  log_space=False, the plain form: v = h̃ (any sign), scanned in linear arithmetic.
  log_space=True, the paper's log-space form: v = g(h̃) > 0 with g(x) = x + 0.5 (x >= 0),
    σ(x) (x < 0), and the scan runs on (log a, log b, log h) with log-sum-exp; h stays > 0.
    The carry is still h itself (zeros at the start, then > 0).
Two SCANS (`scan`) of the same function, equal to float rounding: 'sequential' (lax.scan
over time) and 'associative' (lax.associative_scan with (a1, b1) then (a2, b2) composing to
(a1 a2, a2 b1 + b2), or its log-space analogue); both fold the carried h into step 1.
f' and i' are computed as σ(∓d), d = log(i/f) = softplus(-k_f) - softplus(-k_i): the same
numbers as f/(f+i) without a 0/0 when both gates underflow.

`matmul_dtype='bfloat16'` (for GPU/TPU): every matmul (the gate Dense, OutProj, the MLP, the
decoder) takes bf16 inputs and kernel and returns float32 (fp32 accumulation; a bias is added
in fp32); the embedding, the norms, the conv and its state, the gate arithmetic, the scan, the
carry, the parameters and the logits stay float32 (`precision.py`, the zoo's one rule).

Deviations from the reference (lucidrains/minGRU-pytorch minLM, version 0.2.1, commit
38b26e119a2e85e70ea53825dc09b91b021afa06). Its same function, log_space=True with
conv_width=0: minLM(dim=width, depth=num_layers, ff_mult=mlp_ratio, expansion=hidden/width,
use_lstm=(cell == 'minlstm'), enable_conv=False, dropout=0.), its gate Dense's blocks in the
order [h̃ | k_z], [h̃ | k_f | k_i]. On shared weights, with the first three items aligned, the
logits agree to float32 rounding (2.6-3.3e-6 over 32 tokens, 1e-6 against the reference in
float64; experiments/zoo/references/README.md: max |logit difference| on 4 x 256 random
tokens, the 0.8M configs/zoo.py variants and width 32):
- GELU: nn.gelu, the tanh approximation; the reference's nn.GELU() is exact: 4.6-5.5e-4.
- RMSNorm eps: flax's 1e-6; the reference's is torch's default, float32's epsilon 1.19e-7:
  1.1-1.3e-4 at 0.8M, 3.7-3.8e-5 at width 32 (it weighs where the stream is small, as the
  embedding of std 1/sqrt(D) makes it).
- Biases the reference lacks, on the gate Dense, on OutProj (`rnn_out`) and on the decoder:
  865 parameters for minGRU at 0.8M (829,865 against 829,000), 1,217 for minLSTM. They start
  at zero, so the functions agree at init; biases of std 0.1 move the logits by 0.33-0.75.
- Initialisation, Flax's defaults: embedding N(0, 1/D) (the reference's N(0, 1), 14x at
  D = 200); kernels truncated normal of std 1/sqrt(fan_in), 1.73x the std of PyTorch's
  uniform(±1/sqrt(fan_in)); all biases zero (the reference's MLP biases uniform(±1/sqrt(fan_in))).
  At init (minGRU 0.8M): logit std 1.07 against 0.57, loss 4.71 against 4.33 nats (ln 65 = 4.17).
- The reference's float32 parallel scan (cumsum, then logcumsumexp) loses digits as T grows:
  2-3e-5 against itself in float64 at T = 256, where the sequential scan here is at 1e-6.
- Conv: the reference's enable_conv is x = x + Conv1x1(DepthwiseConv_K(x)) before the block's
  RMSNorm, not the conv above: conv_width > 0 has no counterpart there. Dropout: the
  reference's is on the residual stream after each block; here as above (the same at 0).
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqlab.errors import SeqlabError
from seqlab.models.precision import check_matmul_dtype, dense
from seqlab.models.layers import CausalConv1D, Dropout
from seqlab.models import registry

CELLS = ('mingru', 'minlstm')
SCANS = ('sequential', 'associative')
_GATES = {'mingru': 2, 'minlstm': 3}  # Dense blocks per cell (gates + candidate h̃)


@dataclasses.dataclass(frozen=True)
class MinRNNConfig:
  vocab_size: int
  cell: str = 'mingru'  # 'mingru' or 'minlstm'
  num_layers: int = 3
  width: int = 256  # the residual stream (embedding) width
  expansion: float = 1.0  # recurrent state size hidden = expansion * width
  mlp_ratio: float = 4.0  # MLP hidden size = mlp_ratio * width; 0: no MLP sub-block
  dropout: float = 0.0  # on the embedding and on each sub-block's output, before the residual add
  scan: str = 'associative'  # 'sequential' or 'associative': speed only
  log_space: bool = True  # the paper's log-space model (positive values via g), see above
  conv_width: int = 0  # K of the causal depthwise conv before the gates; 0: no conv (see above)
  # 'bfloat16': bf16 matmul inputs, fp32 accumulation, scan, state, params and loss (GPU/TPU).
  matmul_dtype: str = 'float32'

  def __post_init__(self):
    if self.cell not in CELLS:
      raise SeqlabError(f'unknown model.cell {self.cell!r} for a min-RNN; use one of {list(CELLS)}')
    if self.scan not in SCANS:
      raise SeqlabError(f'model.scan must be one of {list(SCANS)}, got {self.scan!r}')
    for name, least in (('vocab_size', 1), ('num_layers', 1), ('width', 1), ('conv_width', 0)):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise SeqlabError(f'model.{name} must be an integer >= {least}, got {value!r}')
    if not isinstance(self.log_space, bool):
      raise SeqlabError(f'model.log_space must be True or False, got {self.log_space!r}')
    hidden = self.expansion * self.width
    if not self.expansion > 0 or hidden != int(hidden):
      raise SeqlabError(f'model.expansion must be > 0 with expansion * width a whole number, '
                        f'got {self.expansion!r} * {self.width}')
    mlp = self.mlp_ratio * self.width
    if not self.mlp_ratio >= 0 or mlp != int(mlp):
      raise SeqlabError(f'model.mlp_ratio must be >= 0 (0 = no MLP) with mlp_ratio * width a '
                        f'whole number, got {self.mlp_ratio!r} * {self.width}')
    if not 0.0 <= self.dropout < 1.0:
      raise SeqlabError(f'model.dropout must be in [0, 1), got {self.dropout!r}')
    check_matmul_dtype(self.matmul_dtype)

  @property
  def hidden(self) -> int:
    return int(self.expansion * self.width)

  @classmethod
  def from_config(cls, model_config, vocab_size: int) -> 'MinRNNConfig':
    fields = {f.name for f in dataclasses.fields(cls)} - {'vocab_size'}
    return cls(vocab_size=vocab_size, **{k: v for k, v in model_config.items() if k in fields})


def init_carry(config: MinRNNConfig, batch_size: int):
  """The zero state: a tuple with one h (B x hidden, float32) per layer; with a conv
  (conv_width K > 0), one {'conv': B x (K-1) x width, 'h': B x hidden} per layer."""
  h = lambda: jnp.zeros((batch_size, config.hidden), jnp.float32)
  if not config.conv_width:
    return tuple(h() for _ in range(config.num_layers))
  return tuple({'conv': jnp.zeros((batch_size, config.conv_width - 1, config.width), jnp.float32),
                'h': h()} for _ in range(config.num_layers))


def log_g(x):
  """log g(x), g(x) = x + 0.5 for x >= 0 and sigmoid(x) below (continuous, positive)."""
  return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))


def coefficients(cell: str, log_space: bool, gates_TxBxG):
  """(a, b) of h_t = a_t ⊙ h_{t-1} + b_t, or (log a, log b) when `log_space`."""
  if cell == 'mingru':
    k, h_tilde = jnp.split(gates_TxBxG, 2, axis=-1)
    # log(1 - σ(k)) = -softplus(k), log σ(k) = -softplus(-k).
    log_a, log_gate = -jax.nn.softplus(k), -jax.nn.softplus(-k)
  else:
    k_f, k_i, h_tilde = jnp.split(gates_TxBxG, 3, axis=-1)
    d = jax.nn.softplus(-k_f) - jax.nn.softplus(-k_i)  # log(i / f)
    log_a, log_gate = -jax.nn.softplus(d), -jax.nn.softplus(-d)  # log f', log i'
  if log_space:
    return log_a, log_gate + log_g(h_tilde)
  return jnp.exp(log_a), jnp.exp(log_gate) * h_tilde


def scan_linear(a_TxBxH, b_TxBxH, h0_BxH, *, scan: str, log_space: bool):
  """All states h_1..h_T (TxBxH) of h_t = a_t ⊙ h_{t-1} + b_t from h_0, time-major.

  With `log_space`, a and b are log a and log b and h0 is h itself (>= 0; where it is 0 it adds
  nothing, and no log 0 = -inf is formed, so its gradient there is 0, not a); the result is h.
  """
  if log_space:
    mul, add = jnp.add, jnp.logaddexp
    positive = h0_BxH > 0
    log_h0 = jnp.log(jnp.where(positive, h0_BxH, 1.0))
    h1_BxH = jnp.where(positive, add(mul(a_TxBxH[0], log_h0), b_TxBxH[0]), b_TxBxH[0])
  else:
    mul, add = jnp.multiply, jnp.add
    h1_BxH = add(mul(a_TxBxH[0], h0_BxH), b_TxBxH[0])
  if scan == 'sequential':
    def step(h_BxH, ab):
      h_BxH = add(mul(ab[0], h_BxH), ab[1])
      return h_BxH, h_BxH
    _, h_TxBxH = jax.lax.scan(step, h1_BxH, (a_TxBxH[1:], b_TxBxH[1:]))
    h_TxBxH = jnp.concatenate([h1_BxH[None], h_TxBxH])
  else:
    # h_1 folded into the first element: h_t is then the b of the composed prefix 1..t.
    compose = lambda e1, e2: (mul(e1[0], e2[0]), add(mul(e2[0], e1[1]), e2[1]))
    _, h_TxBxH = jax.lax.associative_scan(compose, (a_TxBxH, b_TxBxH.at[0].set(h1_BxH)), axis=0)
  return jnp.exp(h_TxBxH) if log_space else h_TxBxH


class MinRNNLayer(nn.Module):
  """(x TxBxD, h BxH) -> (h_1..h_T TxBxH, h_T): one minGRU / minLSTM layer, time-major."""
  cell: str
  hidden: int
  scan: str = 'associative'
  log_space: bool = True
  matmul_dtype: str = 'float32'  # the gate Dense's; the scan is float32 either way

  @nn.compact
  def __call__(self, x_TxBxD, h_BxH):
    gates_TxBxG = dense(_GATES[self.cell] * self.hidden, self.matmul_dtype,
                        name='gates')(x_TxBxD)
    a, b = coefficients(self.cell, self.log_space, gates_TxBxG)
    h_TxBxH = scan_linear(a, b, h_BxH, scan=self.scan, log_space=self.log_space)
    return h_TxBxH, h_TxBxH[-1]


class MinRNNLM(nn.Module):
  """(tokens BxT int, carry) -> (logits BxTxV float32, carry). Needs a 'dropout' rng when
  training with a rate > 0; `dropout_rate`, if given, replaces `config.dropout` (it may be
  a traced value)."""
  config: MinRNNConfig

  @nn.compact
  def __call__(self, tokens_BxT, carry, *, train: bool = False, dropout_rate: Any = None):
    cfg = self.config
    rate = cfg.dropout if dropout_rate is None else dropout_rate
    drop = lambda x: Dropout(rate)(x, deterministic=not train)
    x_TxBxD = drop(nn.Embed(cfg.vocab_size, cfg.width, name='embed')(tokens_BxT.T))
    new_carry = []
    for i in range(cfg.num_layers):
      u_TxBxD = nn.RMSNorm(name=f'rnn_norm_{i}')(x_TxBxD)
      if cfg.conv_width:
        u_BxTxD, conv = CausalConv1D(cfg.conv_width, name=f'conv_{i}')(
            jnp.swapaxes(u_TxBxD, 0, 1), carry[i]['conv'])
        u_TxBxD, h_BxH = jnp.swapaxes(u_BxTxD, 0, 1), carry[i]['h']
      else:
        h_BxH = carry[i]
      h_TxBxH, h_BxH = MinRNNLayer(cfg.cell, cfg.hidden, cfg.scan, cfg.log_space,
                                   cfg.matmul_dtype, name=f'rnn_{i}')(u_TxBxD, h_BxH)
      new_carry.append({'conv': conv, 'h': h_BxH} if cfg.conv_width else h_BxH)
      self.sow('intermediates', f'h_{i}', h_TxBxH)  # seqlab.neurons: the state after each step
      if cfg.hidden != cfg.width:
        h_TxBxH = dense(cfg.width, cfg.matmul_dtype, name=f'rnn_out_{i}')(h_TxBxH)
      x_TxBxD = x_TxBxD + drop(h_TxBxH)
      if cfg.mlp_ratio:
        y = dense(int(cfg.mlp_ratio * cfg.width), cfg.matmul_dtype, name=f'mlp_in_{i}')(
            nn.RMSNorm(name=f'mlp_norm_{i}')(x_TxBxD))
        x_TxBxD = x_TxBxD + drop(dense(cfg.width, cfg.matmul_dtype, name=f'mlp_out_{i}')(
            nn.gelu(y)))
    x_TxBxD = nn.RMSNorm(name='final_norm')(x_TxBxD)
    logits_TxBxV = dense(cfg.vocab_size, cfg.matmul_dtype, name='decoder')(x_TxBxD).astype(
        jnp.float32)
    return jnp.swapaxes(logits_TxBxV, 0, 1), tuple(new_carry)


def _matrices(config: MinRNNConfig) -> list[tuple[str, int, int]]:
  D, H, mlp = config.width, config.hidden, int(config.mlp_ratio * config.width)
  out = []
  for i in range(config.num_layers):
    out.append((f'rnn_{i}/gates', D, _GATES[config.cell] * H))
    if H != D:
      out.append((f'rnn_out_{i}', H, D))
    if mlp:
      out += [(f'mlp_in_{i}', D, mlp), (f'mlp_out_{i}', mlp, D)]
  return out + [('decoder', D, config.vocab_size)]  # untied


def _describe(config: MinRNNConfig) -> str:
  form = 'log-space' if config.log_space else 'plain'
  conv = f', conv {config.conv_width}' if config.conv_width else ''
  return f'{config.num_layers}x{config.width} {config.cell} ({form}, state {config.hidden}{conv})'


def _recorded_states(config: MinRNNConfig, intermediates):
  return [(layer, 'h', intermediates[f'h_{layer}'][0][:, 0])  # time-major
          for layer in range(config.num_layers)]


def _stub_scans() -> None:
  """The scan replaced by elementwise work of the same inputs and shapes (bench profile)."""
  global scan_linear

  def stub(a_TxBxH, b_TxBxH, h0_BxH, *, scan, log_space):
    del scan
    h_TxBxH = a_TxBxH + b_TxBxH + h0_BxH
    return jnp.exp(h_TxBxH) if log_space else h_TxBxH
  scan_linear = stub


def _variant(cell: str, widths: tuple[int, int, int], doc: str) -> registry.Variant:
  fixed = dict(cell=cell, expansion=1.0, mlp_ratio=4.0, dropout=0.0, scan='sequential',
               log_space=True)
  return registry.Variant(
      sizes={'tiny': dict(fixed, num_layers=2, width=widths[0]),
             '0.8M': dict(fixed, num_layers=2, width=widths[1]),
             '5M': dict(fixed, num_layers=4, width=widths[2])},
      config={'optim.learning_rate': 2e-3}, doc=doc)


MODEL = registry.register(registry.Model(
    name='min_rnn', summary='minGRU / minLSTM in residual blocks (Feng et al. 2024)',
    config_class=MinRNNConfig, module_class=MinRNNLM, init_carry=init_carry,
    describe=_describe, matrices=_matrices,
    state_size=lambda c, tokens: c.hidden + (c.conv_width - 1) * c.width * (c.conv_width > 0),
    neuron_states=lambda c: {'h': c.hidden}, recorded_states=_recorded_states,
    equivalent={'scan': SCANS}, free_fields=('dropout', 'scan', 'matmul_dtype'),
    stub_scans=_stub_scans,
    variants={
        'mingru': _variant('mingru', (16, 200, 352), (  # 829,865 and 5,015,009 parameters
            'Feng et al. 2024 (minGRU), the paper\'s log-space form, in pre-norm residual blocks '
            'with a 4x GELU MLP. Measured (2-core CPU, 4,900 steps, best = final checkpoint, '
            '2026-12-01): val loss 1.4870 (stream), 1.6115 +- 0.0132 over windows of 256.')),
        'minlstm': _variant('minlstm', (16, 192, 336), (  # 840,065 and 5,024,945 parameters
            'The minGRU block with minLSTM. Measured (2-core CPU, 4,900 steps, 2026-12-01): '
            'val loss 1.4942 (stream), 1.6054 +- 0.0133 over windows of 256.')),
    }))
