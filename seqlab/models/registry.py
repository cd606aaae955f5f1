"""Which model a config names: `model.name` -> its config dataclass and Flax module.

Every model maps `(tokens BxT, carry) -> (logits BxTxV float32, carry)`; every leaf of a
carry is batch-first and all zeros means "nothing read yet", so training, evaluation,
sampling, sharding and resets treat all models alike. What differs is said here:

  char_rnn  the post's RNN/GRU/LSTM (`char_rnn`); the default, and the only name a run made
            before the zoo has (its saved config has no `model.name`).
  min_rnn   minGRU / minLSTM in residual blocks (`min_rnn`).
  hawk      RG-LRU in Griffin's Hawk blocks (`hawk`).
  mamba     selective SSM in Mamba blocks (`mamba`).
  gpt       decoder-only transformer (`gpt`): its carry is a KV cache of `context` tokens,
            so it reads windows (data.batching='windows', evaluation window by window).

A config's `model` group holds `name` and exactly the fields of that model's dataclass;
a field another model has is one error line, not silently ignored.
"""

import dataclasses
from typing import Any, NamedTuple

import jax

from seqlab.errors import SeqlabError
from seqlab.models import char_rnn
from seqlab.models import gpt
from seqlab.models import hawk
from seqlab.models import mamba
from seqlab.models import min_rnn

DEFAULT = 'char_rnn'
_VARIANT = {'char_rnn': 'lstm', 'min_rnn': 'mingru'}  # a configs/zoo.py variant of each model


class Family(NamedTuple):
  config_class: type
  module_class: type
  init_params: Any  # (config, seed) -> params
  init_carry: Any  # (config, batch_size) -> carry


FAMILIES = {
    'char_rnn': Family(char_rnn.ModelConfig, char_rnn.CharLM, char_rnn.init_params,
                       char_rnn.init_carry),
    'min_rnn': Family(min_rnn.MinRNNConfig, min_rnn.MinRNNLM, min_rnn.init_params,
                      min_rnn.init_carry),
    'hawk': Family(hawk.HawkConfig, hawk.HawkLM, hawk.init_params, hawk.init_carry),
    'mamba': Family(mamba.MambaConfig, mamba.MambaLM, mamba.init_params, mamba.init_carry),
    'gpt': Family(gpt.GPTConfig, gpt.GPTLM, gpt.init_params, gpt.init_carry),
}


def name_of(model_config) -> str:
  """The model's name in a config group or saved config dict (no name: a pre-zoo run)."""
  name = dict(model_config).get('name', DEFAULT)
  if name not in FAMILIES:
    raise SeqlabError(f'unknown model.name {name!r}; use one of {", ".join(FAMILIES)}')
  return name


def defaults(name: str) -> dict:
  """{field: default} of a model's config fields (not vocab_size, which the data sets); {}
  for an unknown name (the config check reports it)."""
  if name not in FAMILIES:
    return {}
  return {f.name: f.default for f in dataclasses.fields(FAMILIES[name].config_class)
          if f.name != 'vocab_size' and f.default is not dataclasses.MISSING}


def family_of(config) -> Family:
  """The family of a model dataclass (as `config_of` returns it)."""
  for family in FAMILIES.values():
    if isinstance(config, family.config_class):
      return family
  raise TypeError(f'not a model config: {config!r}')


def config_of(model_config, vocab_size: int):
  """The model dataclass that the `model` group describes, checked (one-line SeqlabErrors)."""
  name = name_of(model_config)
  config_class = FAMILIES[name].config_class
  fields = {f.name for f in dataclasses.fields(config_class)} - {'vocab_size'}
  given = dict(model_config)
  given.pop('name', None)
  foreign = sorted(set(given) - fields)
  if foreign:
    raise SeqlabError(
        f"model.name={name!r} has no field(s) {', '.join(foreign)}; its fields are "
        f"{', '.join(sorted(fields))} (start from a config or variant that declares this model, "
        f'e.g. configs/zoo.py:{_VARIANT.get(name, name)})')
  return config_class(vocab_size=vocab_size, **given)


def module_of(config):
  """The Flax module of a model dataclass."""
  return family_of(config).module_class(config)


def init_params(config, seed: int):
  return family_of(config).init_params(config, seed)


def init_carry(config, batch_size: int):
  return family_of(config).init_carry(config, batch_size)


def window(config) -> int | None:
  """How many tokens the model can condition on (None: unbounded, a recurrent state)."""
  return config.context if isinstance(config, gpt.GPTConfig) else None


def neuron_states(config) -> dict[str, int]:
  """{kind: units per layer} of the recurrent states `seqlab.neurons` records: an LSTM's
  `c` and `h`, the `h` of the other char-rnn cells, of minGRU/minLSTM and of the RG-LRU.
  Mamba's state (d_inner x d_state per layer) and a GPT's KV cache are not one unit per
  feature: a SeqlabError says so."""
  if isinstance(config, char_rnn.ModelConfig):
    return {'c': config.hidden_size, 'h': config.hidden_size} if config.cell == 'lstm' \
        else {'h': config.hidden_size}
  if isinstance(config, min_rnn.MinRNNConfig):
    return {'h': config.hidden}
  if isinstance(config, hawk.HawkConfig):
    return {'h': config.lru}
  raise SeqlabError(f'seqlab.neurons records recurrent states of units (the char-rnn cells, '
                    f'minGRU/minLSTM, the RG-LRU); a {describe(config)} has none')


def recorded_states(config, intermediates) -> list[tuple[int, str, Any]]:
  """[(layer, kind, N x units)] of one sequence (batch 1) recorded with
  `apply(..., mutable=['intermediates'])`, in the order of `neuron_states`."""
  found = []
  for layer in range(config.num_layers):
    if isinstance(config, char_rnn.ModelConfig):  # time-major, a carry per step
      (states,) = intermediates[f'layer_{layer}']['states']
      per_kind = dict(zip(('c', 'h'), states)) if config.cell == 'lstm' else {'h': states}
      found += [(layer, kind, values[:, 0]) for kind, values in per_kind.items()]
    elif isinstance(config, min_rnn.MinRNNConfig):  # time-major
      found.append((layer, 'h', intermediates[f'h_{layer}'][0][:, 0]))
    else:  # hawk, batch-major
      found.append((layer, 'h', intermediates[f'recurrent_{layer}']['h'][0][0]))
  return found


def count_params(params) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))


def describe(config) -> str:
  """'3x512 lstm', '2x192 mingru (log-space)', '6x384 gpt (6 heads, context 256)', ..."""
  if isinstance(config, char_rnn.ModelConfig):
    return f'{config.num_layers}x{config.hidden_size} {config.cell}'
  if isinstance(config, min_rnn.MinRNNConfig):
    form = 'log-space' if config.log_space else 'plain'
    conv = f', conv {config.conv_width}' if config.conv_width else ''
    return f'{config.num_layers}x{config.width} {config.cell} ({form}, state {config.hidden}{conv})'
  if isinstance(config, hawk.HawkConfig):
    return f'{config.num_layers}x{config.width} hawk (RG-LRU {config.lru})'
  if isinstance(config, mamba.MambaConfig):
    return f'{config.num_layers}x{config.width} mamba (d_inner {config.d_inner}, ' \
        f'd_state {config.d_state})'
  return f'{config.num_layers}x{config.width} gpt ({config.num_heads} heads, ' \
      f'context {config.context})'
