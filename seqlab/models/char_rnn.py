"""The character language model: embedding -> recurrent layers -> softmax.

`logits, carry = model.apply(params, tokens, carry)`: the model takes and returns
its recurrent state, so training with carried state (truncated BPTT),
evaluation over a whole split and one-symbol-at-a-time sampling share one code
path. Each layer scans its cell over the whole sequence (layer-wise scanning)
so that the input projection of all time steps is one matmul outside the scan.

Initialization: input kernels Glorot-uniform, recurrent kernels orthogonal per
gate block, biases zero except the LSTM forget gate (1.0, Jozefowicz et al.
2015) so that the cell state is remembered from the first step.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqlab.models import cells
from seqlab.models.layers import Dropout
from seqlab.models import recurrence
from seqlab.models import registry
from seqlab.errors import SeqlabError


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  cell: str = 'lstm'
  num_layers: int = 2
  hidden_size: int = 256
  embed_size: int = 0  # 0: one-hot input (char-rnn)
  dropout: float = 0.0  # on the output of every recurrent layer
  unroll: int = 1  # jax.lax.scan unroll factor
  backward: str = 'fused'  # 'fused' (custom VJP) or 'autodiff' (the reference): speed only
  # 'bfloat16': bf16 matmul inputs, fp32 accumulation, state, params and loss (GPU/TPU).
  matmul_dtype: str = 'float32'

  def __post_init__(self):
    if self.cell not in cells.GATES:
      raise SeqlabError(f'unknown model.cell {self.cell!r}; use one of {sorted(cells.GATES)}')
    for name in ('vocab_size', 'num_layers', 'hidden_size', 'unroll'):
      if getattr(self, name) < 1:
        raise SeqlabError(f'model.{name} must be >= 1, got {getattr(self, name)}')
    if self.backward not in recurrence.BACKWARDS:
      raise SeqlabError(f'model.backward must be one of {recurrence.BACKWARDS}, '
                        f'got {self.backward!r}')
    if self.matmul_dtype not in recurrence.MATMUL_DTYPES:
      raise SeqlabError(f'model.matmul_dtype must be one of {recurrence.MATMUL_DTYPES}, '
                        f'got {self.matmul_dtype!r}')
    if self.embed_size < 0:
      raise SeqlabError(f'model.embed_size must be >= 0 (0 = one-hot), got {self.embed_size}')
    if not 0.0 <= self.dropout < 1.0:
      raise SeqlabError(f'model.dropout must be in [0, 1), got {self.dropout}')

  @classmethod
  def from_config(cls, model_config, vocab_size: int) -> 'ModelConfig':
    fields = {f.name for f in dataclasses.fields(cls)} - {'vocab_size'}
    return cls(vocab_size=vocab_size, **{k: v for k, v in model_config.items() if k in fields})


def init_carry(config: ModelConfig, batch_size: int):
  """The zero state: a tuple with one carry per layer."""
  return tuple(cells.init_carry(config.cell, batch_size, config.hidden_size)
               for _ in range(config.num_layers))


def _orthogonal_blocks(num_blocks: int):
  """Initializer for (H, num_blocks * H): an orthogonal H x H matrix per gate."""
  def init(key, shape, dtype=jnp.float32):
    hidden = shape[0]
    keys = jax.random.split(key, num_blocks)
    ortho = nn.initializers.orthogonal()
    return jnp.concatenate([ortho(k, (hidden, hidden), dtype) for k in keys], axis=1)
  return init


def _lstm_bias(key, shape, dtype=jnp.float32):
  del key
  hidden = shape[0] // 4
  return jnp.zeros(shape, dtype).at[hidden:2 * hidden].set(1.0)  # gate order i, f, g, o


class RecurrentLayer(nn.Module):
  """One recurrent layer over a whole sequence: (x BxTxD, carry) -> (h BxTxH, carry).

  With `time_major=True` the sequences are TxBxD -> TxBxH instead (what `CharLM`
  uses between layers: the scan runs over the leading axis, so no transposes).
  Applied with `mutable=['intermediates']`, it also records its state after
  every step (`states`: the carry with a time axis, in the layout of the
  output; (c, h) for LSTM).
  """
  cell: str
  hidden_size: int
  unroll: int = 1
  backward: str = 'fused'  # how gradients are computed (seqlab.recurrence); speed only
  time_major: bool = False
  matmul_dtype: str = 'float32'  # see ModelConfig.matmul_dtype
  # > 0: x holds symbol ids (BxT or TxB ints) standing for one-hot vectors of this size, and
  # the input projection is a row lookup of kernel_ih: the same numbers as the one-hot
  # matmul (one nonzero term per sum) without its V x 4H multiply-adds per symbol.
  one_hot_size: int = 0

  @nn.compact
  def __call__(self, x, carry):
    gates = cells.GATES[self.cell]
    width = gates * self.hidden_size
    in_size = self.one_hot_size or x.shape[-1]
    kernel_ih = self.param('kernel_ih', nn.initializers.glorot_uniform(), (in_size, width))
    bias_init = _lstm_bias if self.cell == 'lstm' else nn.initializers.zeros_init()
    bias = self.param('bias', bias_init, (width,))
    step_params = {'kernel_hh': self.param('kernel_hh', _orthogonal_blocks(gates),
                                           (self.hidden_size, width))}
    if self.cell == 'gru':
      step_params['bias_hn'] = self.param('bias_hn', nn.initializers.zeros_init(),
                                          (self.hidden_size,))
    # The input projection of all time steps at once, time-major for the scan.
    if self.one_hot_size:
      ids_TxB = x if self.time_major else x.T
      xp_TxBxG = jnp.take(kernel_ih, ids_TxB, axis=0) + bias
    else:
      layout = 'tbd,dg->tbg' if self.time_major else 'btd,dg->tbg'
      xp_TxBxG = recurrence.matmul(x, kernel_ih, self.matmul_dtype, layout) + bias
    to_output_layout = (lambda a: a) if self.time_major else (lambda a: jnp.swapaxes(a, 0, 1))
    if self.is_mutable_collection('intermediates'):  # record the whole state of every step
      if self.matmul_dtype != 'float32':
        raise SeqlabError('recording states supports model.matmul_dtype=float32 only')
      step = _emit_carry(functools.partial(cells.STEPS[self.cell], step_params))
      carry, (h_TxBxH, states) = jax.lax.scan(step, carry, xp_TxBxG, unroll=self.unroll)
      self.sow('intermediates', 'states', jax.tree.map(to_output_layout, states))
    else:
      h_TxBxH, carry = recurrence.scan(
          self.cell, step_params['kernel_hh'], cells.recurrent_bias(self.cell, step_params),
          xp_TxBxG, carry, self.unroll, self.backward, self.matmul_dtype)
    return to_output_layout(h_TxBxH), carry


def _emit_carry(step):
  def step_and_carry(carry, xp):
    carry, h = step(carry, xp)
    return carry, (h, carry)
  return step_and_carry


# Inputs in the Dense's dtype, result (and so logits) in fp32.
_dot_general_fp32 = functools.partial(jax.lax.dot_general, preferred_element_type=jnp.float32)


class CharLM(nn.Module):
  """(tokens BxT int, carry) -> (logits BxTxV, carry). Needs a 'dropout' rng when training.

  `dropout_rate`, if given, replaces `config.dropout` (it may be a traced value).
  """
  config: ModelConfig

  @nn.compact
  def __call__(self, tokens_BxT, carry, *, train: bool = False, dropout_rate=None):
    cfg = self.config
    dropout_rate = cfg.dropout if dropout_rate is None else dropout_rate
    tokens_TxB = tokens_BxT.T  # time-major inside: each layer scans its leading axis
    # No embedding: char-rnn's one-hot input, which layer 0 reads as ids (a row lookup).
    x = nn.Embed(cfg.vocab_size, cfg.embed_size, name='embed')(tokens_TxB) \
        if cfg.embed_size else tokens_TxB
    new_carry = []
    for i in range(cfg.num_layers):
      one_hot_size = cfg.vocab_size if i == 0 and not cfg.embed_size else 0
      x, layer_carry = RecurrentLayer(cfg.cell, cfg.hidden_size, cfg.unroll, cfg.backward,
                                      time_major=True, matmul_dtype=cfg.matmul_dtype,
                                      one_hot_size=one_hot_size, name=f'layer_{i}')(x, carry[i])
      new_carry.append(layer_carry)
      x = Dropout(dropout_rate)(x, deterministic=not train)
    logits_TxBxV = nn.Dense(cfg.vocab_size, name='decoder', dtype=cfg.matmul_dtype,
                            dot_general=_dot_general_fp32)(x)
    return jnp.swapaxes(logits_TxBxV, 0, 1), tuple(new_carry)


def init_params(config: ModelConfig, seed: int):
  model = CharLM(config)
  tokens = jnp.zeros((1, 1), jnp.int32)
  return model.init(jax.random.PRNGKey(seed), tokens, init_carry(config, 1))['params']


def count_params(params) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))


def _matrices(config: ModelConfig) -> list[tuple[str, int, int]]:
  G, H = cells.GATES[config.cell], config.hidden_size
  out = []
  for i in range(config.num_layers):
    if i or config.embed_size:  # layer 0's one-hot input kernel is a row lookup
      out.append((f'layer_{i}/kernel_ih', H if i else config.embed_size, G * H))
    out.append((f'layer_{i}/kernel_hh', H, G * H))
  return out + [('decoder', H, config.vocab_size)]


def _neuron_states(config: ModelConfig) -> dict[str, int]:
  """An LSTM's `c` and `h`, the `h` of the other cells."""
  H = config.hidden_size
  return {'c': H, 'h': H} if config.cell == 'lstm' else {'h': H}


def _recorded_states(config: ModelConfig, intermediates):
  found = []
  for layer in range(config.num_layers):  # time-major, a carry per step
    (states,) = intermediates[f'layer_{layer}']['states']
    per_kind = dict(zip(('c', 'h'), states)) if config.cell == 'lstm' else {'h': states}
    found += [(layer, kind, values[:, 0]) for kind, values in per_kind.items()]
  return found


MODEL = registry.register(registry.Model(
    name='char_rnn',
    summary="the post's RNN / GRU / LSTM (`model.cell`), one-hot input, Karpathy's char-rnn",
    config_class=ModelConfig, module_class=CharLM, init_carry=init_carry,
    init_params=init_params,  # not jitted: the parameters of runs made before the zoo
    describe=lambda c: f'{c.num_layers}x{c.hidden_size} {c.cell}',
    matrices=_matrices,
    state_size=lambda c, tokens: (2 if c.cell == 'lstm' else 1) * c.hidden_size,
    neuron_states=_neuron_states, recorded_states=_recorded_states,
    equivalent={'backward': recurrence.BACKWARDS},
    free_fields=('dropout', 'unroll', 'backward', 'matmul_dtype'),
    variants={'lstm': registry.Variant(
        sizes={'tiny': dict(cell='lstm', num_layers=2, hidden_size=16),
               '0.8M': dict(cell='lstm', num_layers=2, hidden_size=256),  # 871,745
               '5M': dict(cell='lstm', num_layers=3, hidden_size=512)},  # 5,415,489
        doc="configs/shakespeare.py:cpu's 2x256 LSTM, unchanged (the zoo's baseline)")}))
