"""Declaring a sweep as data, and expanding it into trials.

A config file declares its sweep next to `get_config`:

    def get_sweep(arg=None):
      return sweeps.product(sweeps.axis('model.num_layers', [1, 2, 3]),
                            sweeps.axis('model.dropout', [0.0, 0.5]))

A sweep is a list of overrides, one dict `{dotted config key: value}` per
trial. The combinators build such lists: `axis` (one key, many values),
`fixed` (one key, one value), `product` (every combination), `zipped`
(element-wise, equal lengths) and `chain` (one list after the other). Ranges
(`uniform`, `log_uniform`, `integer`, `choice`) are sampled into such lists by
`random` and `quasi_random` (`seqlab.sweeps.space`), which combine the same way.

`make_trials(base_config, overrides)` checks that every key is a field of the
base config (one error line naming the key otherwise), applies each dict to a
copy of it (ml_collections checks types) and names the trial after its
overrides, e.g. `num_layers=2,dropout=0.5`: the name of its run directory.
"""

import copy
import dataclasses
import difflib
import hashlib
import importlib.util
import itertools
import os
import re
import sys
from typing import Any, Iterable

from ml_collections import config_dict

from seqlab.errors import SeqlabError

Overrides = dict[str, Any]


def axis(key: str, values: Iterable[Any]) -> list[Overrides]:
  """One trial per value of `key`."""
  values = list(values)
  if not values:
    raise SeqlabError(f'sweep axis {key!r} has no values')
  return [{key: value} for value in values]


def fixed(key: str, value: Any) -> list[Overrides]:
  """One value for `key`: in a product, it is added to every trial."""
  return [{key: value}]


def _merge(dicts: Iterable[Overrides], combinator: str) -> Overrides:
  merged = {}
  for d in dicts:
    for key, value in d.items():
      if key in merged:
        raise SeqlabError(f'sweep.{combinator}: {key!r} is set by two of its parts')
      merged[key] = value
  return merged


def product(*sweeps: list[Overrides]) -> list[Overrides]:
  """Every combination, the last sweep varying fastest (like nested for-loops)."""
  return [_merge(combo, 'product') for combo in itertools.product(*sweeps)]


def zipped(*sweeps: list[Overrides]) -> list[Overrides]:
  """Element-wise: trial i takes the i-th overrides of every sweep (equal lengths)."""
  lengths = {len(s) for s in sweeps}
  if len(lengths) > 1:
    raise SeqlabError(f'sweep.zipped needs sweeps of equal length, got {[len(s) for s in sweeps]}')
  return [_merge(parts, 'zipped') for parts in zip(*sweeps)]


def chain(*sweeps: list[Overrides]) -> list[Overrides]:
  """The trials of each sweep, one sweep after the other."""
  return [dict(d) for s in sweeps for d in s]


def _loaded(path: str):
  """The module of the file at `path` if this process has loaded it (as the --config flag
  does), else None."""
  target = os.path.realpath(path)
  for module in list(sys.modules.values()):
    file = getattr(module, '__file__', None)
    if isinstance(file, str) and os.path.basename(file) == os.path.basename(target) and \
        os.path.realpath(file) == target:
      return module
  return None


def declared_in(config_arg: str) -> list[Overrides]:
  """`get_sweep(variant)` of the config file of `--config FILE[:VARIANT]` (loaded once)."""
  path, _, variant = config_arg.partition(':')
  module = _loaded(path)
  if module is None:
    spec = importlib.util.spec_from_file_location('seqlab_sweep_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  if not hasattr(module, 'get_sweep'):
    raise SeqlabError(f'{path} declares no sweep; add get_sweep(arg) returning seqlab.sweep '
                      'overrides (see configs/shakespeare.py)')
  return module.get_sweep(variant or None)


@dataclasses.dataclass(frozen=True)
class Trial:
  name: str  # from the overrides; the name of the trial's run directory
  overrides: Overrides
  config: config_dict.ConfigDict


def _fields(node: config_dict.ConfigDict, prefix: str = '') -> tuple[set[str], set[str]]:
  """The dotted keys of `node`'s fields (values) and of its groups (nested ConfigDicts)."""
  fields, groups = set(), set()
  for name, value in node.items():
    if isinstance(value, config_dict.ConfigDict):
      groups.add(prefix + name)
      more_fields, more_groups = _fields(value, f'{prefix}{name}.')
      fields |= more_fields
      groups |= more_groups
    else:
      fields.add(prefix + name)
  return fields, groups


def check_key(base: config_dict.ConfigDict, key: Any) -> None:
  """Raises SeqlabError (one line naming `key`) unless `key` is a field of `base`."""
  fields, groups = _fields(base)
  if isinstance(key, str) and key in fields:
    return
  if not isinstance(key, str):
    raise SeqlabError(f'sweep key {key!r} is not a string; keys are dotted config fields, '
                      "e.g. 'model.hidden_size'")
  if key in groups:
    example = min(f for f in fields if f.startswith(key + '.'))
    raise SeqlabError(f'sweep key {key!r} is a group of the config, not a field; sweep its '
                      f'fields, e.g. {example!r}')
  close = difflib.get_close_matches(key, sorted(fields), n=1)
  hint = f'did you mean {close[0]!r}?' if close else 'see the config file for its fields'
  raise SeqlabError(f'sweep sets unknown config key {key!r}: not a field of the config; {hint}')


def apply_overrides(base: config_dict.ConfigDict, overrides: Overrides) -> config_dict.ConfigDict:
  """A copy of `base` with dotted-key overrides; unknown keys and wrong types are errors."""
  config = copy.deepcopy(base)
  for key, value in overrides.items():
    check_key(base, key)
    *groups, field = key.split('.')
    node = config
    for group in groups:
      node = node[group]
    try:
      node[field] = value
    except (TypeError, ValueError) as e:
      reason = ' '.join(str(e).split())  # one line
      raise SeqlabError(f'sweep sets {key}={value!r}: {reason}') from None
  return config


def _format_value(value: Any) -> str:
  if isinstance(value, float):
    return format(value, 'g')
  if isinstance(value, (list, tuple)):
    return '-'.join(_format_value(v) for v in value)
  return str(value)


_UNSAFE = re.compile(r'[^A-Za-z0-9._+=,-]')
_MAX_NAME = 200  # bytes; file systems allow 255


def _short_keys(keys: list[str]) -> dict[str, str]:
  """The last part of each dotted key, or the whole key where two would share it."""
  last = [k.split('.')[-1] for k in keys]
  return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def trial_name(overrides: Overrides, short: dict[str, str]) -> str:
  """`num_layers=2,dropout=0.5`: readable, safe as a file name, at most 200 bytes."""
  if not overrides:
    return 'base'
  name = ','.join(f'{short[k]}={_format_value(v)}' for k, v in overrides.items())
  name = _UNSAFE.sub('_', name)
  if name.startswith('.'):
    name = '_' + name[1:]
  if len(name) > _MAX_NAME:
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    name = f'{name[:_MAX_NAME - 11]}-{digest}'
  return name


def make_trials(base: config_dict.ConfigDict, sweep: list[Overrides]) -> list[Trial]:
  """The trials of `sweep` on `base`, each a complete config; raises on any bad trial."""
  if not sweep:
    raise SeqlabError('the sweep has no trials')
  keys = list(dict.fromkeys(k for overrides in sweep for k in overrides))
  for key in keys:
    check_key(base, key)
  short = _short_keys(keys)
  trials, names = [], {}
  for i, overrides in enumerate(sweep):
    name = trial_name(overrides, short)
    if name in names:
      raise SeqlabError(f'sweep trials {names[name]} and {i} have the same overrides ({name}); '
                        'remove the duplicate')
    names[name] = i
    trials.append(Trial(name, dict(overrides), apply_overrides(base, overrides)))
  return trials
