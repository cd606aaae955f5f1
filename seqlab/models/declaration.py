"""What a model says about itself: a `Model` declaration, checked when it is registered.

A model is one module that builds a `Model` and passes it to `registry.register` at import
time; every command (training, evaluation, sampling, neurons, sweeps, the bench, the FLOP
count, the run header) reads the declaration, and nothing else names the model. The
contract a model's config, module and carry follow is docs/zoo.md, "Adding a model".
"""

import dataclasses
from typing import Any, Callable, Mapping

from seqlab.errors import SeqlabError

SIZES = ('tiny', '0.8M', '5M')  # the sizes every variant declares: tests, the bench's rows


@dataclasses.dataclass(frozen=True)
class Variant:
  """A named setting of a model: its rows of `seqlab.bench` and a `configs/zoo.py` variant.

  sizes   {'tiny', '0.8M', '5M'} -> model fields: 'tiny' for the conformance tests (a few
          thousand parameters), '0.8M' and '5M' the bench's rows (about that many parameters).
  zoo     the model fields of `configs/zoo.py:<variant>` (None: sizes['0.8M']).
  config  dotted config keys that variant also sets, e.g. {'optim.learning_rate': 2e-3}.
  doc     what that variant is and what it measured (the command's help).
  """
  sizes: Mapping[str, Mapping[str, Any]]
  zoo: Mapping[str, Any] | None = None
  config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  doc: str = ''

  @property
  def zoo_fields(self) -> dict:
    return dict(self.sizes['0.8M'] if self.zoo is None else self.zoo)


@dataclasses.dataclass(frozen=True)
class Model:
  """One model's declaration (see docs/zoo.md, "Adding a model", for each field's contract).

  Required:
    name           the `model.name` that selects it
    summary        one line for docs and listings: 'RG-LRU in Griffin's Hawk blocks (De et al.)'
    config_class   a frozen dataclass: `vocab_size` first, then fields with defaults; its
                   __post_init__ raises a SeqlabError naming `model.<field>` for a bad value
    module_class   the Flax module, built as module_class(config): (tokens BxT, carry, *,
                   train=False, dropout_rate=None) -> (logits BxTxV float32, carry)
    init_carry     (config, batch_size) -> the zero carry: real arrays, batch-first
    describe       config -> '2x168 hawk (RG-LRU 168)', the run header's words
    matrices       config -> [(name, inputs, outputs)]: every weight matrix a character goes
                   through (`seqlab.models.flops`: training FLOPs = 6 x their sizes + extra)
    state_size     (config, tokens) -> numbers of state per layer after reading `tokens`
                   tokens (a recurrence: what it carries, constant; attention: its K and V of
                   the tokens it keeps)
    variants       {variant name: Variant}, at least one
  Optional:
    extra_flops    config -> {kind: training FLOPs per character} beyond the matrices
                   (attention's q.k and weights.v, a selective scan)
    window         config -> the tokens it can condition on (None: unbounded, a recurrence);
                   a model with a window trains on random windows, is evaluated window by
                   window, and samples from its last `window` tokens
    neuron_states  config -> {kind: units per layer} that `seqlab.neurons` records
    recorded_states  (config, intermediates) -> [(layer, kind, N x units)] of one sequence
                   recorded with apply(..., mutable=['intermediates']), in neuron_states' order
    equivalent     {field: values} that compute the same function (a scan's two forms);
                   the conformance suite checks they agree
    free_fields    fields a run may change when it resumes (speed and regularisation only)
    init_params    (config, seed) -> params (default: the module's init on a 1 x 1 input)
    stub_scans     () -> None: replaces the model's time loop by elementwise work for the
                   bench's `--stub_scans` profile (the numbers it trains are not the model's)
    bench_peer     a `seqlab.bench` worker measurement that times a PyTorch peer of the model
    memory_bound   the bench also measures memory bandwidth beside its rows
  """
  # The required fields default to None, so that a declaration leaving one out is `check`'s
  # one SeqlabError naming it (at registration), not a TypeError from the constructor.
  name: str = dataclasses.field(default=None, metadata={'required': True})
  summary: str = dataclasses.field(default=None, metadata={'required': True})
  config_class: type = dataclasses.field(default=None, metadata={'required': True})
  module_class: type = dataclasses.field(default=None, metadata={'required': True})
  init_carry: Callable = dataclasses.field(default=None, metadata={'required': True})
  describe: Callable = dataclasses.field(default=None, metadata={'required': True})
  matrices: Callable = dataclasses.field(default=None, metadata={'required': True})
  state_size: Callable = dataclasses.field(default=None, metadata={'required': True})
  variants: Mapping[str, Variant] = dataclasses.field(default=None, metadata={'required': True})
  extra_flops: Callable | None = None
  window: Callable | None = None
  neuron_states: Callable | None = None
  recorded_states: Callable | None = None
  equivalent: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
  free_fields: tuple = ('dropout', 'matmul_dtype')
  init_params: Callable | None = None
  stub_scans: Callable | None = None
  bench_peer: str | None = None
  memory_bound: bool = False
  source: str = ''  # filled by the registry: the file that registered it


REQUIRED = tuple(f.name for f in dataclasses.fields(Model) if f.metadata.get('required'))


def check(model: Model, where: str) -> None:
  """One SeqlabError naming what a declaration lacks or gets wrong (`where`: its module)."""
  if not isinstance(model, Model):
    raise SeqlabError(f'{where}: registry.register takes a registry.Model, got {model!r}')
  missing = [name for name in REQUIRED if getattr(model, name) in (None, '', {}, ())]
  if missing:
    raise SeqlabError(f'{where}: the model declaration of {model.name or "?"!r} lacks '
                      f'{", ".join(missing)} (registry.Model: see docs/zoo.md, "Adding a model")')
  if not isinstance(model.name, str) or not model.name.isidentifier():
    raise SeqlabError(f'{where}: a model name is an identifier, got {model.name!r}')
  if not dataclasses.is_dataclass(model.config_class) or \
      next(iter(dataclasses.fields(model.config_class)), None) is None or \
      dataclasses.fields(model.config_class)[0].name != 'vocab_size':
    raise SeqlabError(f'{where}: {model.name}.config_class must be a dataclass whose first '
                      'field is vocab_size')
  fields = {f.name for f in dataclasses.fields(model.config_class)}
  for label, names in (('free_fields', model.free_fields), ('equivalent', tuple(model.equivalent))):
    unknown = sorted(set(names) - fields)
    if unknown:
      raise SeqlabError(f'{where}: {model.name}.{label} names no field(s) {", ".join(unknown)}')
  for variant_name, variant in model.variants.items():
    if not isinstance(variant, Variant):
      raise SeqlabError(f'{where}: {model.name}.variants[{variant_name!r}] is not a '
                        'registry.Variant')
    lacking = [size for size in SIZES if size not in variant.sizes]
    if lacking:
      raise SeqlabError(f'{where}: variant {variant_name!r} of {model.name} lacks the size(s) '
                        f'{", ".join(lacking)}')
    for size, group in [*variant.sizes.items(), ('zoo', variant.zoo_fields)]:
      unknown = sorted(set(group) - fields)
      if unknown:
        raise SeqlabError(f'{where}: variant {variant_name!r} ({size}) of {model.name} sets '
                          f'no field(s) {", ".join(unknown)} of {model.config_class.__name__}')
  if (model.neuron_states is None) != (model.recorded_states is None):
    raise SeqlabError(f'{where}: {model.name} declares one of neuron_states and '
                      'recorded_states; declare both or neither')
