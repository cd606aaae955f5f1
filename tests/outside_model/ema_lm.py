"""A researcher's own model, defined outside the seqlab package: a gated EMA recurrence.

Each of `num_layers` layers carries H = hidden_size numbers per sequence and reads its input
x_t (width H) through one Dense [k_t | v_t] = x_t W + c:
  a_t = sigmoid(k_t),   h_t = a_t * h_{t-1} + (1 - a_t) * v_t     (per unit: an input-gated EMA)
  x_t <- x_t + Dropout(Dense(gelu(h_t)))                           (a residual block)
Model: embedding (V -> H) -> the layers -> Dense decoder (H -> V). The recurrence is linear in h,
so it has two forms, equal to float rounding (`scan`): 'sequential' (lax.scan over time) and
'associative' (lax.associative_scan; (a1, b1) then (a2, b2) compose to (a1 a2, a2 b1 + b2)).
The carry is a tuple of one h (B x H, float32) per layer. `matmul_dtype='bfloat16'`: the Dense
layers take bf16 inputs (seqlab.models.precision.dense); gates, scan, carry and logits stay fp32.

It registers itself when imported: a config names it with model.name='ema' and model.module=
the path of this file (see ema_config.py beside it).
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqlab.errors import SeqlabError
from seqlab.models import registry
from seqlab.models.layers import Dropout  # its rate may be traced (fused sweep trials)
from seqlab.models.precision import check_matmul_dtype, dense

SCANS = ('sequential', 'associative')


@dataclasses.dataclass(frozen=True)
class EmaConfig:
  vocab_size: int
  num_layers: int = 2
  hidden_size: int = 64
  dropout: float = 0.0  # on each block's output, before the residual add
  scan: str = 'associative'  # 'sequential' or 'associative': speed only
  matmul_dtype: str = 'float32'  # 'bfloat16': bf16 matmul inputs; state, params, logits fp32

  def __post_init__(self):
    for name in ('vocab_size', 'num_layers', 'hidden_size'):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SeqlabError(f'model.{name} must be an integer >= 1, got {value!r}')
    if not 0.0 <= self.dropout < 1.0:
      raise SeqlabError(f'model.dropout must be in [0, 1), got {self.dropout!r}')
    if self.scan not in SCANS:
      raise SeqlabError(f'model.scan must be one of {list(SCANS)}, got {self.scan!r}')
    check_matmul_dtype(self.matmul_dtype)


def init_carry(config: EmaConfig, batch_size: int):
  return tuple(jnp.zeros((batch_size, config.hidden_size), jnp.float32)
               for _ in range(config.num_layers))


def scan_ema(a_TxBxH, b_TxBxH, h0_BxH, scan: str):
  """h_1..h_T (T x B x H) of h_t = a_t * h_{t-1} + b_t from h_0, time-major."""
  b_TxBxH = b_TxBxH.at[0].add(a_TxBxH[0] * h0_BxH)  # h_0 folded into the first step
  if scan == 'sequential':
    step = lambda h, ab: (ab[0] * h + ab[1],) * 2
    return jax.lax.scan(step, jnp.zeros_like(h0_BxH), (a_TxBxH, b_TxBxH))[1]
  compose = lambda e1, e2: (e1[0] * e2[0], e2[0] * e1[1] + e2[1])
  return jax.lax.associative_scan(compose, (a_TxBxH, b_TxBxH), axis=0)[1]


class EmaLM(nn.Module):
  """(tokens B x T, carry) -> (logits B x T x V float32, carry)."""
  config: EmaConfig

  @nn.compact
  def __call__(self, tokens_BxT, carry, *, train: bool = False, dropout_rate: Any = None):
    cfg = self.config
    linear = lambda features, name: dense(features, cfg.matmul_dtype, name=name)
    rate = cfg.dropout if dropout_rate is None else dropout_rate
    x_TxBxH = nn.Embed(cfg.vocab_size, cfg.hidden_size, name='embed')(tokens_BxT.T)
    new_carry = []
    for i in range(cfg.num_layers):
      k, v = jnp.split(linear(2 * cfg.hidden_size, f'gates_{i}')(x_TxBxH), 2, axis=-1)
      a = jax.nn.sigmoid(k)
      h_TxBxH = scan_ema(a, (1 - a) * v, carry[i], cfg.scan)
      self.sow('intermediates', f'h_{i}', h_TxBxH)  # seqlab.neurons: the state after each step
      new_carry.append(h_TxBxH[-1])
      y = linear(cfg.hidden_size, f'out_{i}')(nn.gelu(h_TxBxH))
      x_TxBxH = x_TxBxH + Dropout(rate)(y, deterministic=not train)
    logits_TxBxV = linear(cfg.vocab_size, 'decoder')(x_TxBxH)
    return jnp.swapaxes(logits_TxBxV, 0, 1).astype(jnp.float32), tuple(new_carry)


def _matrices(c: EmaConfig):
  H = c.hidden_size
  return [m for i in range(c.num_layers)
          for m in ((f'gates_{i}', H, 2 * H), (f'out_{i}', H, H))] + [('decoder', H, c.vocab_size)]


MODEL = registry.register(registry.Model(
    name='ema', summary='input-gated EMA recurrence in residual blocks (a researcher\'s model)',
    config_class=EmaConfig, module_class=EmaLM, init_carry=init_carry,
    describe=lambda c: f'{c.num_layers}x{c.hidden_size} ema ({c.scan} scan)',
    matrices=_matrices, state_size=lambda c, tokens: c.hidden_size,
    neuron_states=lambda c: {'h': c.hidden_size},
    recorded_states=lambda c, inter: [(layer, 'h', inter[f'h_{layer}'][0][:, 0])  # time-major
                                      for layer in range(c.num_layers)],
    equivalent={'scan': SCANS}, free_fields=('dropout', 'scan', 'matmul_dtype'),
    variants={'ema': registry.Variant(
        sizes={'tiny': dict(num_layers=1, hidden_size=16),
               '0.8M': dict(num_layers=2, hidden_size=354),  # 800,105 parameters (vocab 65)
               '5M': dict(num_layers=4, hidden_size=640)},  # 5,006,145
        doc='An input-gated EMA (diagonal linear recurrence) in residual blocks.')}))
