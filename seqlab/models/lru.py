"""The LRU (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long Sequences",
arXiv:2303.06349): a complex diagonal linear recurrence in residual blocks, a causal char LM.

`logits, carry = LRULM(config).apply(params, tokens_BxT, carry)`: the same interface as
`char_rnn.CharLM`. The carry holds the whole state of every layer, the complex LRU state h
(B x N) stored as its real and imaginary parts `{'h_re', 'h_im'}` (float32, batch-first; the
zero carry is h = 0, nothing read), so a sequence cut into chunks with the carry passed along
gives the logits of the whole sequence, and sampling one token at a time is the same call
with T = 1.

Followed: the authors' JAX reference, NicolasZucchet/minimal-LRU at commit
bbd71b1104c399ec0d13819527d791949e66f599, `lru/model.py` (LRU, nu_init, theta_init,
gamma_log_init, matrix_init, binary_operator_diag, SequenceLayer, StackedEncoderModel,
ClassificationModel), with `run_train.py`'s defaults where the classes leave a choice open
(prenorm=True; norm 'layer' of the two, see below). On shared weights the two agree to
float32 rounding: 3.7e-6 on the logits of the 0.8M variant over 4 x 256 tokens (both are
1.2e-5 from the reference in float64; experiments/zoo/references/README.md). Per layer
(H = width = d_model, N = state = d_hidden):

  x' = x + Dropout(GLU(Dropout(GELU(LRU(LayerNorm(x))))))       (SequenceLayer, prenorm)
  GLU(u) = out1(u) * sigmoid(out2(u))                             (two H x H Dense, biases)
  LRU(u): lambda = exp(-exp(nu_log) + i exp(theta_log))           (N complex, |lambda| < 1)
          gamma = exp(gamma_log)                                  (N, learned; init below)
          h_t = lambda * h_{t-1} + gamma * ((B_re + i B_im) u_t)  (B: N x H)
          y_t = Re((C_re + i C_im) h_t) + D * u_t                 (C: H x N, D: H)
  model:  x = encoder(one_hot(tokens)) (a V x H Dense with bias, read as a row lookup: the
          reference's `encoder` Dense on a one-hot input), the layers, LayerNorm, decoder
          (an untied H x V Dense with bias, the reference's `decoder`).
GELU is nn.gelu (the tanh approximation), as the reference's; LayerNorm is nn.LayerNorm
(eps 1e-6, scale and bias), as the reference's norm='layer'.

Initialisers as the reference: |lambda| uniform by area on the ring [r_min, r_max]
(|lambda|^2 = u (r_max^2 - r_min^2) + r_min^2, u ~ U[0, 1); nu_log = log(-log |lambda|)),
phase = exp(theta_log) = max_phase * u', u' ~ U[0, 1); gamma_log = log sqrt(1 - |lambda|^2)
of the initial lambda; B_re, B_im ~ N(0, 1 / (2 H)); C_re, C_im ~ N(0, 1 / N); D ~ N(0, 1);
the encoder, out1, out2 and decoder Flax's Dense default (truncated-normal lecun: std
1/sqrt(fan_in), the encoder's fan_in = V, zero biases); LayerNorm scale 1, bias 0.

Two forms of the same recurrence (`scan`, equal to float rounding): 'sequential' (lax.scan
over time) and 'associative' (lax.associative_scan of the affine maps h -> a h + b, composed
as (a_i, b_i) then (a_j, b_j) = (a_j a_i, a_j b_i + b_j): the reference's
binary_operator_diag). Both fold the carried state into the first step
(b_0 += lambda h_{-1}). The recurrence runs in complex64 inside the layer; the carry is its
real and imaginary parts. `seqlab.neurons` records Re h of each unit (`layer/h/j`, the
carry's h_re after each symbol).

Deviations from the reference:
- A causal language model: embedding -> layers -> final LayerNorm -> decoder, no pooling
  (ClassificationModel's mean pooling and log_softmax; the logits are returned). The final
  LayerNorm is not in the reference (with prenorm its decoder reads the residual stream
  unnormalised).
- Normalisation: LayerNorm, always. The reference's run_train.py default is norm='batch'
  (BatchNorm over batch and time: not causal, and not one token at a time); its other option,
  'layer', is this one. Pre-norm, as run_train.py's default (prenorm=True).
- Defaults of the ring: r_min = 0.9, r_max = 0.999 (our choice, the same ring as Hawk's
  RG-LRU a; the reference's LRU and run_train.py default to r_min = 0, r_max = 1, the whole
  disc); max_phase = 6.28 as the reference. All three are fields.
- The initial |lambda|^2 is computed as 1 - gap with gap = (1 - r_min^2) - u (r_max^2 - r_min^2)
  and log |lambda|^2 = log1p(-gap) near 1 (the same distribution): with r_max = 1 the
  reference's log(u (r_max^2 - r_min^2) + r_min^2) can round to log 1 = 0 in float32, a
  nu_log of -inf and gamma_log of -inf. The uniform draws are floored at float32's tiny (a
  draw of exactly 0 gives the reference a theta_log of -inf, and with r_min = 0 an infinite
  nu_log); gamma_log is computed as 0.5 log(-expm1(-2 exp(nu_log))), the same number.
- gamma is applied after the B matmul, gamma * (B u), not as the reference's B_norm =
  B * gamma before it: the same function (float rounding apart), and in bf16 gamma stays
  float32.
- Dropout: seqlab's Dropout with the reference's placement (after the GELU and after the
  GLU) and its broadcast over time (the reference's broadcast_dims=[0]: one mask per sequence
  and unit, shared by every step of a call; here of each call, so a chunk of carried-state
  training draws its own). The reference has no dropout on the embedding, nor here.
- The carry: the reference starts every sequence from h = 0 (its parallel scan has no initial
  state); here a call continues its carry, in either scan form.
- Training (not part of the model, noted for comparison): the reference's train_helpers give
  nu_log, theta_log, gamma_log, B_re and B_im half the learning rate (lr_factor 0.5) and no
  weight decay, the rest AdamW (weight decay 0.05); seqlab's optimizer treats every parameter
  alike (the zoo variant: Adam, lr 2e-3, no weight decay).
- Precision: float32 by default. `matmul_dtype='bfloat16'` (precision.py, the zoo's rule):
  the B and C matmuls, out1, out2 and the decoder take bf16 inputs and kernel and return
  float32 (the C matmul reads the float32 state rounded to bf16, as every matmul input); the
  encoder lookup, the LayerNorms, lambda, gamma, the recurrence and its state, D * u, the
  GELU and sigmoid, the carry and the parameters stay float32.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqlab.errors import SeqlabError
from seqlab.models.layers import Dropout
from seqlab.models.precision import check_matmul_dtype, dense, einsum
from seqlab.models import registry

SCANS = ('sequential', 'associative')
TINY = float(jnp.finfo(jnp.float32).tiny)  # the floor of the init's uniform draws


@dataclasses.dataclass(frozen=True)
class LRUConfig:
  vocab_size: int
  num_layers: int = 4  # the reference's run_train.py default
  width: int = 128  # H, d_model
  state: int = 0  # N, d_hidden (complex units); 0: width // 2 (run_train.py: 256 and 128)
  r_min: float = 0.9  # the initial |lambda| is uniform (by area) on the ring [r_min, r_max]
  r_max: float = 0.999
  max_phase: float = 6.28  # the initial phase of lambda is uniform on [0, max_phase]
  dropout: float = 0.0
  scan: str = 'sequential'  # 'sequential' (lax.scan) or 'associative' (lax.associative_scan)
  # 'bfloat16': bf16 matmul inputs, fp32 accumulation, scan, state, params and loss (GPU/TPU).
  matmul_dtype: str = 'float32'

  def __post_init__(self):
    for name, least in (('vocab_size', 1), ('num_layers', 1), ('width', 1), ('state', 0)):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise SeqlabError(f'model.{name} must be an integer >= {least}, got {value!r}')
    for name in ('r_min', 'r_max', 'max_phase', 'dropout'):
      value = getattr(self, name)
      if (not isinstance(value, (int, float)) or isinstance(value, bool)
          or not math.isfinite(value)):
        raise SeqlabError(f'model.{name} must be a finite number, got {value!r}')
    if not 0.0 <= self.r_min < 1.0:
      raise SeqlabError(f'model.r_min must be in [0, 1), got {self.r_min!r}')
    if not self.r_min <= self.r_max <= 1.0:
      raise SeqlabError(f'model.r_max must be in [r_min, 1] = [{self.r_min}, 1], '
                        f'got {self.r_max!r}')
    if not self.max_phase > 0.0:
      raise SeqlabError(f'model.max_phase must be > 0, got {self.max_phase!r}')
    if not 0.0 <= self.dropout < 1.0:
      raise SeqlabError(f'model.dropout must be in [0, 1), got {self.dropout!r}')
    if self.scan not in SCANS:
      raise SeqlabError(f'model.scan must be one of {SCANS}, got {self.scan!r}')
    check_matmul_dtype(self.matmul_dtype)

  @property
  def n(self) -> int:
    """N, the number of complex units of each layer's state."""
    return self.state or max(1, self.width // 2)


def init_carry(config: LRUConfig, batch_size: int):
  """The zero state: a tuple with one {'h_re': B x N, 'h_im': B x N} (float32) per layer."""
  return tuple({'h_re': jnp.zeros((batch_size, config.n), jnp.float32),
                'h_im': jnp.zeros((batch_size, config.n), jnp.float32)}
               for _ in range(config.num_layers))


# --- Initialisers (the reference's nu_init, theta_init, gamma_log_init, matrix_init).

def nu_log_of_uniform(u, r_min: float, r_max: float):
  """nu_log = log(-log |lambda|) with |lambda|^2 = u (r_max^2 - r_min^2) + r_min^2, u in [0, 1)
  (finite for every float32 u, also u = 0 with r_min = 0 and u = 1 - 2^-23 with r_max = 1)."""
  u = jnp.maximum(u, TINY)
  spread = r_max ** 2 - r_min ** 2
  r2 = r_min ** 2 + u * spread  # |lambda|^2, uniform: the ring's area
  gap = jnp.maximum((1.0 - r_min ** 2) - u * spread, TINY)  # 1 - |lambda|^2, exact near 1
  log_r2 = jnp.where(r2 < 0.5, jnp.log(jnp.maximum(r2, TINY)), jnp.log1p(-gap))
  return jnp.log(-0.5 * log_r2)


def theta_log_of_uniform(u, max_phase: float):
  """theta_log = log(phase), phase = max_phase * u, u in [0, 1) (finite also for u = 0)."""
  return math.log(max_phase) + jnp.log(jnp.maximum(u, TINY))


def _nu_log_init(r_min: float, r_max: float):
  def init(key, shape, dtype=jnp.float32):
    return nu_log_of_uniform(jax.random.uniform(key, shape, jnp.float32), r_min,
                             r_max).astype(dtype)
  return init


def _theta_log_init(max_phase: float):
  def init(key, shape, dtype=jnp.float32):
    return theta_log_of_uniform(jax.random.uniform(key, shape, jnp.float32),
                                max_phase).astype(dtype)
  return init


def gamma_log_of(nu_log):
  """log sqrt(1 - |lambda|^2) for |lambda| = exp(-exp(nu_log)) (the initial gamma_log)."""
  return 0.5 * jnp.log(-jnp.expm1(-2.0 * jnp.exp(nu_log)))


def _normal(std: float):
  return lambda key, shape, dtype=jnp.float32: std * jax.random.normal(key, shape, dtype)


# --- The recurrence.

def diagonal_scan(lambda_N, bu_BxTxN, h_BxN, scan: str):
  """h_t = lambda * h_{t-1} + bu_t (complex) from h_{-1} = h_BxN: (h_BxTxN, h_last_BxN)."""
  if scan == 'sequential':
    def step(h_BxN, bu_BxN):
      h_BxN = lambda_N * h_BxN + bu_BxN
      return h_BxN, h_BxN
    h_last, h_TxBxN = jax.lax.scan(step, h_BxN, jnp.swapaxes(bu_BxTxN, 0, 1))
    return jnp.swapaxes(h_TxBxN, 0, 1), h_last
  if scan == 'associative':
    # The carried state folded into the first step, then the reference's binary_operator_diag.
    bu_BxTxN = bu_BxTxN.at[:, 0].add(lambda_N * h_BxN)
    a_BxTxN = jnp.broadcast_to(lambda_N, bu_BxTxN.shape)
    compose = lambda e_i, e_j: (e_j[0] * e_i[0], e_j[0] * e_i[1] + e_j[1])
    _, h_BxTxN = jax.lax.associative_scan(compose, (a_BxTxN, bu_BxTxN), axis=1)
    return h_BxTxN, h_BxTxN[:, -1]
  raise SeqlabError(f'model.scan must be one of {SCANS}, got {scan!r}')


class LRU(nn.Module):
  """The LRU layer: (u BxTxH, carry {'h_re', 'h_im'}) -> (y BxTxH, carry)."""
  config: LRUConfig

  @nn.compact
  def __call__(self, u_BxTxH, carry):
    cfg = self.config
    N, H, mm = cfg.n, u_BxTxH.shape[-1], cfg.matmul_dtype
    theta_log = self.param('theta_log', _theta_log_init(cfg.max_phase), (N,))
    nu_log = self.param('nu_log', _nu_log_init(cfg.r_min, cfg.r_max), (N,))
    gamma_log = self.param('gamma_log', lambda key, shape: gamma_log_of(nu_log), (N,))
    B_re = self.param('B_re', _normal(1 / math.sqrt(2 * H)), (N, H))
    B_im = self.param('B_im', _normal(1 / math.sqrt(2 * H)), (N, H))
    C_re = self.param('C_re', _normal(1 / math.sqrt(N)), (H, N))
    C_im = self.param('C_im', _normal(1 / math.sqrt(N)), (H, N))
    D = self.param('D', _normal(1.0), (H,))
    lambda_N = jnp.exp(jax.lax.complex(-jnp.exp(nu_log), jnp.exp(theta_log)))
    # B u as one real H -> 2N matmul ([B_re; B_im]), then gamma (float32).
    bu_BxTx2N = einsum('bth,mh->btm', u_BxTxH, jnp.concatenate([B_re, B_im], axis=0), mm)
    gamma_N = jnp.exp(gamma_log)
    bu_BxTxN = jax.lax.complex(bu_BxTx2N[..., :N] * gamma_N, bu_BxTx2N[..., N:] * gamma_N)
    h_BxTxN, h_BxN = diagonal_scan(lambda_N, bu_BxTxN, jax.lax.complex(carry['h_re'],
                                                                        carry['h_im']), cfg.scan)
    self.sow('intermediates', 'h', jnp.real(h_BxTxN))  # seqlab.neurons: Re h after each step
    # Re(C h) = C_re h_re - C_im h_im: one real 2N -> H matmul of [h_re, h_im].
    h_BxTx2N = jnp.concatenate([jnp.real(h_BxTxN), jnp.imag(h_BxTxN)], axis=-1)
    y_BxTxH = einsum('btm,hm->bth', h_BxTx2N, jnp.concatenate([C_re, -C_im], axis=1), mm)
    return y_BxTxH + D * u_BxTxH, {'h_re': jnp.real(h_BxN), 'h_im': jnp.imag(h_BxN)}


class SequenceLayer(nn.Module):
  """The reference's SequenceLayer, prenorm with LayerNorm: x + Drop(GLU(Drop(GELU(LRU(LN x)))))."""
  config: LRUConfig

  @nn.compact
  def __call__(self, x_BxTxH, carry, *, train: bool, rate):
    cfg = self.config
    H, mm = x_BxTxH.shape[-1], cfg.matmul_dtype

    def drop(y_BxTxH):  # one mask per sequence and unit, shared over time (broadcast_dims=[0])
      if not train:
        return y_BxTxH
      mask_Bx1xH = Dropout(rate)(jnp.ones((y_BxTxH.shape[0], 1, H), y_BxTxH.dtype),
                                 deterministic=False)
      return y_BxTxH * mask_Bx1xH

    y_BxTxH, carry = LRU(cfg, name='seq')(nn.LayerNorm(name='normalization')(x_BxTxH), carry)
    y_BxTxH = drop(nn.gelu(y_BxTxH))
    gate_BxTxH = jax.nn.sigmoid(dense(H, mm, name='out2')(y_BxTxH))
    y_BxTxH = dense(H, mm, name='out1')(y_BxTxH) * gate_BxTxH  # the GLU
    return x_BxTxH + drop(y_BxTxH), carry


class Encoder(nn.Module):
  """The reference's `encoder` Dense (V -> H, bias) on a one-hot token, read as a row lookup."""
  vocab_size: int
  width: int

  @nn.compact
  def __call__(self, tokens_BxT):
    kernel_VxH = self.param('kernel', nn.initializers.lecun_normal(),
                            (self.vocab_size, self.width), jnp.float32)
    bias_H = self.param('bias', nn.initializers.zeros_init(), (self.width,), jnp.float32)
    return jnp.take(kernel_VxH, tokens_BxT, axis=0) + bias_H


class LRULM(nn.Module):
  """(tokens BxT int, carry) -> (logits BxTxV float32, carry). Needs a 'dropout' rng when training.

  `dropout_rate`, if given, replaces `config.dropout` (it may be a traced value).
  """
  config: LRUConfig

  @nn.compact
  def __call__(self, tokens_BxT, carry, *, train: bool = False, dropout_rate=None):
    cfg = self.config
    rate = cfg.dropout if dropout_rate is None else dropout_rate
    x_BxTxH = Encoder(cfg.vocab_size, cfg.width, name='encoder')(tokens_BxT)
    new_carry = []
    for i in range(cfg.num_layers):
      x_BxTxH, layer_carry = SequenceLayer(cfg, name=f'layers_{i}')(x_BxTxH, carry[i],
                                                                     train=train, rate=rate)
      new_carry.append(layer_carry)
    x_BxTxH = nn.LayerNorm(name='norm')(x_BxTxH)
    logits_BxTxV = dense(cfg.vocab_size, cfg.matmul_dtype, name='decoder')(x_BxTxH)
    return logits_BxTxV.astype(jnp.float32), tuple(new_carry)


def _matrices(config: LRUConfig) -> list[tuple[str, int, int]]:
  """The FLOP count's matrices, each a real parameter. A complex N x H matrix applied to a real
  input costs two real N x H matmuls, B_re u and B_im u (computed as one H -> 2N matmul), and
  Re(C h), the real part of a complex H x N matrix times a complex state, two real H x N
  matmuls, C_re h_re - C_im h_im (one 2N -> H matmul); the full complex product (4 real
  matmuls) is never formed. The encoder is a row lookup (not counted, as every embedding)."""
  H, N = config.width, config.n
  out = []
  for i in range(config.num_layers):
    out += [(f'layers_{i}/seq/B_re', H, N), (f'layers_{i}/seq/B_im', H, N),
            (f'layers_{i}/seq/C_re', N, H), (f'layers_{i}/seq/C_im', N, H),
            (f'layers_{i}/out1', H, H), (f'layers_{i}/out2', H, H)]
  return out + [('decoder', H, config.vocab_size)]  # untied


# No extra_flops: the recurrence's elementwise work is O(N) per layer and character (forward
# about 10 FLOPs per complex unit: lambda h 6, + b 2, gamma * (B u) 2; about 30 in training),
# against the matmuls' 6 (4 N H + 2 H^2): 0.3% at 0.8M (H = 220, N = 110). As Hawk's RG-LRU
# and minGRU's scans, it is not counted (seqlab/models/flops.py); Mamba's E x N scan is.


def _stub_scans() -> None:
  """The scan replaced by elementwise work of the same inputs and shapes (bench profile)."""
  global diagonal_scan

  def stub(lambda_N, bu_BxTxN, h_BxN, scan):
    del scan
    h_BxTxN = bu_BxTxN + lambda_N * h_BxN[:, None]
    return h_BxTxN, h_BxTxN[:, -1]
  diagonal_scan = stub


def _recorded_states(config: LRUConfig, intermediates):
  return [(layer, 'h', intermediates[f'layers_{layer}']['seq']['h'][0][0])  # batch-major
          for layer in range(config.num_layers)]


_FIXED = dict(state=0, r_min=0.9, r_max=0.999, max_phase=6.28, dropout=0.0, scan='sequential')
MODEL = registry.register(registry.Model(
    name='lru', summary='LRU, a complex diagonal linear recurrence (Orvieto et al. 2023)',
    config_class=LRUConfig, module_class=LRULM, init_carry=init_carry,
    describe=lambda c: f'{c.num_layers}x{c.width} lru (state {c.n} complex)',
    matrices=_matrices,
    state_size=lambda c, tokens: 2 * c.n,  # h's real and imaginary parts
    neuron_states=lambda c: {'h': c.n}, recorded_states=_recorded_states,  # Re h, the carry's h_re
    equivalent={'scan': SCANS}, free_fields=('dropout', 'scan', 'matmul_dtype'),
    stub_scans=_stub_scans,
    variants={'lru': registry.Variant(
        sizes={'tiny': dict(_FIXED, num_layers=2, width=16),  # 4,449 parameters
               '0.8M': dict(_FIXED, num_layers=4, width=220),  # 809,445
               '5M': dict(_FIXED, num_layers=8, width=392)},  # 4,989,833
        config={'optim.learning_rate': 2e-3},
        doc=('Orvieto et al. 2023 (LRU): complex diagonal recurrence, exponential '
             'parameterisation, ring init |lambda| in [0.9, 0.999], gamma normalisation, in the '
             'blocks of NicolasZucchet/minimal-LRU (prenorm LayerNorm, LRU, GELU, GLU, '
             'residual), state = width / 2. Not yet trained on tiny Shakespeare.'))}))
