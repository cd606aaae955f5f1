"""Which model a config names: `model.name` -> the declaration its module registered.

A model is one module that declares itself (`Model`, `Variant`: seqlab/models/declaration.py)
and calls `register` at import. The models of this package are found by importing every
module of `seqlab.models` once, when a name is first looked up; a model defined anywhere else
(a researcher's file beside their config) registers the same way when its module is imported,
and a config names that module in `model.module` (a file path or a dotted module name), so a
fresh process given only a run directory (resume, sample, score, a sweep's trials) imports it
again. docs/zoo.md, "Adding a model", is the contract. Importing this module imports no JAX
(a sweep's own process reads run directories through `seqlab.run.directory`); looking a model
up imports the model modules, and with them JAX.

A config's `model` group holds `name`, optionally `module`, and exactly the fields of that
model's config dataclass; a field another model has is one error line, not silently ignored.
"""

import dataclasses
import hashlib
import importlib
import importlib.util
import os
import pathlib
import pkgutil
import sys
from typing import Any

from seqlab.errors import SeqlabError
from seqlab.models.declaration import Model, Variant, check  # pylint: disable=unused-import

DEFAULT = 'char_rnn'  # the model of a config without model.name (a run made before the zoo)
SOURCE_KEY = 'module'  # the model group's key naming the module that defines the model
_PACKAGE = pathlib.Path(__file__).resolve().parent.parent  # seqlab/
_MODELS: dict[str, Model] = {}
_BY_CONFIG: dict[type, Model] = {}
_found_builtin = False


def register(model: Model) -> Model:
  """Adds `model` (called at import by the model's own module); returns it, with its source."""
  frame = sys._getframe(1)  # pylint: disable=protected-access
  where = frame.f_globals.get('__file__') or frame.f_globals.get('__name__', '?')
  check(model, str(where))
  source = str(pathlib.Path(where).resolve()) if os.path.exists(str(where)) else str(where)
  model = dataclasses.replace(model, source=source)
  old = _MODELS.get(model.name)
  if old is not None and old.source != source:
    raise SeqlabError(f'model.name {model.name!r} is registered twice: by {old.source} and by '
                      f'{source}; rename one')
  _MODELS[model.name] = model
  _BY_CONFIG[model.config_class] = model
  return model


def _find_builtin() -> None:
  """Imports every module of seqlab.models once (the built-in models register themselves)."""
  global _found_builtin
  if _found_builtin:
    return
  _found_builtin = True
  package = importlib.import_module('seqlab.models')
  for info in pkgutil.iter_modules(package.__path__):
    importlib.import_module(f'seqlab.models.{info.name}')


def is_builtin(model: Model) -> bool:
  return pathlib.Path(model.source).is_relative_to(_PACKAGE)


def is_file(source: str) -> bool:
  """Whether a `model.module` names a file (a path) rather than a dotted module name."""
  return source.endswith('.py') or os.sep in source


def load_module(source: str) -> None:
  """Imports the module that defines a model: a `.py` file's path or a dotted module name.
  Imported once per process; a module already imported under its own name is reused."""
  if is_file(source):
    path = pathlib.Path(source).expanduser().resolve()
    if any(getattr(m, '__file__', None) and pathlib.Path(m.__file__).resolve() == path
           for m in list(sys.modules.values())):
      return
    if not path.is_file():
      raise SeqlabError(f'model.module {source!r}: no such file; the model of this config or '
                        'run is defined there (restore it, or set --config.model.module)')
    name = f'seqlab_model_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}'
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
      spec.loader.exec_module(module)
    except BaseException:
      del sys.modules[name]
      raise
    return
  try:
    importlib.import_module(source)
  except ModuleNotFoundError as e:
    raise SeqlabError(f'model.module {source!r} cannot be imported ({e}); the model of this '
                      'config or run is defined there') from None


def names() -> list[str]:
  """Every registered model name: the default, the package's others by name, then those from
  outside the package in the order they registered (whatever imported what first)."""
  _find_builtin()
  order = {name: i for i, name in enumerate(_MODELS)}
  return sorted(_MODELS, key=lambda n: (n != DEFAULT, not is_builtin(_MODELS[n]),
                                        n if is_builtin(_MODELS[n]) else order[n]))


def get(name: str) -> Model:
  _find_builtin()
  if name not in _MODELS:
    raise SeqlabError(f'unknown model.name {name!r}; use one of {", ".join(names())} (or set '
                      f'model.{SOURCE_KEY} to the file that registers it)')
  return _MODELS[name]


def name_of(model_config) -> str:
  """The model's name in a config group or saved config dict (no name: a pre-zoo run); a
  `module` there is imported first."""
  group = dict(model_config)
  if group.get(SOURCE_KEY):
    load_module(group[SOURCE_KEY])
  name = group.get('name', DEFAULT)
  get(name)
  return name


def variants() -> dict[str, tuple[Model, Variant]]:
  """{variant name: (its model, the Variant)} over every registered model, in order."""
  out = {}
  for name in names():
    for variant_name, variant in _MODELS[name].variants.items():
      if variant_name in out:
        raise SeqlabError(f'variant {variant_name!r} is declared by {out[variant_name][0].name} '
                          f'and by {name}; rename one')
      out[variant_name] = (_MODELS[name], variant)
  return out


def group_of(variant_name: str, size: str | None = None) -> dict:
  """The config's `model` group of a variant: at `size` (declaration.SIZES), or its
  configs/zoo.py fields; with `module` for a model from outside the package."""
  model, variant = variants()[variant_name]
  fields = variant.zoo_fields if size is None else dict(variant.sizes[size])
  return {'name': model.name, **source_field(model), **fields}


def source_field(model: Model) -> dict:
  """{'module': its file} for a model from outside the package ({} for a built-in one)."""
  return {} if is_builtin(model) else {SOURCE_KEY: model.source}


def defaults(name: str) -> dict:
  """{field: default} of a model's config fields (not vocab_size, which the data sets); {}
  for an unknown name (the config check reports it)."""
  _find_builtin()
  if name not in _MODELS:
    return {}
  return {f.name: f.default for f in dataclasses.fields(_MODELS[name].config_class)
          if f.name != 'vocab_size' and f.default is not dataclasses.MISSING}


def free_fields(name: str) -> tuple:
  """The model fields a run may change when it resumes (its declaration's, and `module`)."""
  _find_builtin()
  return (*(_MODELS[name].free_fields if name in _MODELS else ()), SOURCE_KEY)


def of(config) -> Model:
  """The declaration of a model's config dataclass (as `config_of` returns it)."""
  _find_builtin()
  model = _BY_CONFIG.get(type(config))
  if model is None:
    raise TypeError(f'not a registered model config: {config!r}')
  return model


def config_of(model_config, vocab_size: int):
  """The model dataclass that the `model` group describes, checked (one-line SeqlabErrors)."""
  name = name_of(model_config)
  config_class = _MODELS[name].config_class
  fields = {f.name for f in dataclasses.fields(config_class)} - {'vocab_size'}
  given = dict(model_config)
  given.pop('name', None)
  given.pop(SOURCE_KEY, None)
  foreign = sorted(set(given) - fields)
  if foreign:
    example = next(iter(_MODELS[name].variants))
    raise SeqlabError(
        f"model.name={name!r} has no field(s) {', '.join(foreign)}; its fields are "
        f"{', '.join(sorted(fields))} (start from a config or variant that declares this model, "
        f'e.g. configs/zoo.py:{example})')
  return config_class(vocab_size=vocab_size, **given)


def module_of(config):
  """The Flax module of a model dataclass."""
  return of(config).module_class(config)


def init_params(config, seed: int):
  """The model's parameters at initialisation (jitted: one compilation, not one per op)."""
  import jax  # pylint: disable=g-import-not-at-top
  model = of(config)
  if model.init_params is not None:
    return model.init_params(config, seed)
  tokens = jax.numpy.zeros((1, 1), jax.numpy.int32)
  init = jax.jit(model.module_class(config).init)
  return init(jax.random.PRNGKey(seed), tokens, model.init_carry(config, 1))['params']


def init_carry(config, batch_size: int):
  """The zero carry of `batch_size` sequences: the one way every command builds a carry."""
  return of(config).init_carry(config, batch_size)


def window(config) -> int | None:
  """How many tokens the model can condition on (None: unbounded, a recurrent state)."""
  model = of(config)
  return None if model.window is None else model.window(config)


def state_size(config, tokens: int) -> int:
  """Numbers of state per layer after reading `tokens` tokens of context: a recurrence's is
  constant, attention's grows with the context it keeps (the tasks' x axis of recall)."""
  return int(of(config).state_size(config, tokens))


def neuron_states(config) -> dict[str, int]:
  """{kind: units per layer} of the recurrent states `seqlab.neurons` records; a SeqlabError
  for a model that declares none (a matrix-valued state, a KV cache)."""
  model = of(config)
  if model.neuron_states is None:
    recording = [n for n in names() if _MODELS[n].neuron_states is not None]
    raise SeqlabError(f'seqlab.neurons records recurrent states of units (models '
                      f'{", ".join(recording)}); a {describe(config)} has none')
  return model.neuron_states(config)


def recorded_states(config, intermediates) -> list[tuple[int, str, Any]]:
  """[(layer, kind, N x units)] of one sequence (batch 1) recorded with
  `apply(..., mutable=['intermediates'])`, in the order of `neuron_states`."""
  neuron_states(config)
  return of(config).recorded_states(config, intermediates)


def count_params(params) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  return int(sum(x.size for x in jax.tree.leaves(params)))


def describe(config) -> str:
  """'3x512 lstm', '2x192 mingru (log-space)', '6x384 gpt (6 heads, context 256)', ..."""
  return of(config).describe(config)
