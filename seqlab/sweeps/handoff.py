"""What a sweep hands to the process of a trial: its complete config, as data.

The sweep's process loads the config file once (with the command line's
`--config.*` overrides), applies each trial's overrides and writes the result
to SWEEP_DIR/trials/NAME.json. The trial's process (`seqlab.sweeps.trial`)
reads it back; it never sees the config file or the sweep's command line.

The JSON keeps what plain JSON would lose, so the trial's ConfigDict equals
the sweep's, types included: tuples (`{"__tuple__": [...]}`), typed fields
such as placeholders (`{"__ref__": "str", "value": null}`) and whether the
config is locked. (Two fields that share one FieldReference arrive as two
fields of the same value.)

Also here: the commands. The process of a task is `python -m
seqlab.sweeps.trial --trial_json FILE --workdir DIR` (one trial) or the same
with several pairs and `--fused` (a fused group); sweep.json records for each
trial a `python launch.py --config ... --workdir ...` that re-runs it alone.
"""

import json
import pathlib
import shlex
import sys
from typing import Any

from ml_collections import config_dict

from seqlab.errors import SeqlabError
from seqlab.run import directory as rundir
from seqlab.sweeps import declare

TRIALS_DIRNAME = 'trials'  # SWEEP_DIR/trials/NAME.json
ENTRY = 'seqlab.sweeps.trial'  # python -m ENTRY
_TUPLE, _REF = '__tuple__', '__ref__'
_TYPES = {t.__name__: t for t in (bool, int, float, str, tuple, list)}


def _encode(value: Any, key: str) -> Any:
  if isinstance(value, config_dict.ConfigDict):
    return {k: _encode(v, f'{key}.{k}' if key else k)
            for k, v in value.items(preserve_field_references=True)}
  if isinstance(value, config_dict.FieldReference):
    if _TYPES.get(value.get_type().__name__) is not value.get_type():
      raise SeqlabError(f'config field {key} is a reference of type {value.get_type()}, '
                        'which a sweep cannot pass to its trials')
    return {_REF: value.get_type().__name__, 'value': _encode(value.get(), key)}
  if isinstance(value, tuple):
    return {_TUPLE: [_encode(v, key) for v in value]}
  if isinstance(value, list):
    return [_encode(v, key) for v in value]
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  raise SeqlabError(f'config field {key} holds a {type(value).__name__}, which a sweep cannot '
                    'pass to its trials; use numbers, strings, bools, tuples or lists')


def _decode(value: Any) -> Any:
  if isinstance(value, dict):
    if set(value) == {_TUPLE}:
      return tuple(_decode(v) for v in value[_TUPLE])
    if set(value) == {_REF, 'value'}:
      return config_dict.FieldReference(_decode(value['value']), field_type=_TYPES[value[_REF]])
    return config_dict.ConfigDict({k: _decode(v) for k, v in value.items()})
  if isinstance(value, list):
    return [_decode(v) for v in value]
  return value


def config_to_json(config: config_dict.ConfigDict) -> str:
  return json.dumps({'locked': config.is_locked, 'config': _encode(config, '')}, indent=1)


def config_from_json(text: str) -> config_dict.ConfigDict:
  data = json.loads(text)
  config = _decode(data['config'])
  if data['locked']:
    config.lock()
  return config


def trial_path(sweep_dir: pathlib.Path, name: str) -> pathlib.Path:
  return pathlib.Path(sweep_dir) / TRIALS_DIRNAME / f'{name}.json'


def write_trial(sweep_dir: pathlib.Path, trial: declare.Trial) -> pathlib.Path:
  """Writes the trial (name, overrides, config) for its process; returns the file."""
  path = trial_path(sweep_dir, trial.name)
  path.parent.mkdir(parents=True, exist_ok=True)
  data = json.loads(config_to_json(trial.config))
  data.update(name=trial.name,
              overrides={k: _encode(v, k) for k, v in trial.overrides.items()})
  rundir.write_atomic(path, json.dumps(data, indent=1))
  return path


def read_trial(path: pathlib.Path) -> declare.Trial:
  text = pathlib.Path(path).read_text(encoding='utf-8')
  data = json.loads(text)
  return declare.Trial(data['name'], {k: _decode(v) for k, v in data['overrides'].items()},
                       config_from_json(text))


def task_command(trial_files_and_dirs: list, fused: bool = False,
                 halving_log: pathlib.Path | None = None) -> list[str]:
  """The process of one task: a trial, or (`fused`) one fused group of trials; judged at the
  rungs of `halving_log` (the sweep's halving.jsonl) if given."""
  pairs = [arg for path, workdir in trial_files_and_dirs
           for arg in (f'--trial_json={pathlib.Path(path).absolute()}',
                       f'--workdir={pathlib.Path(workdir).absolute()}')]
  judged = [f'--halving_log={pathlib.Path(halving_log).absolute()}'] if halving_log else []
  return [sys.executable, '-m', ENTRY, *(['--fused'] if fused else []), *judged, *pairs]


def printable(command: list[str]) -> str:
  """A command as a user types it: `python -m ...`."""
  return shlex.join(['python', *command[1:]] if command[0] == sys.executable else command)


def flag_value(value) -> str:
  """A config value as ml_collections' config flags parse it."""
  return value if isinstance(value, str) else repr(value)


def rerun_command(config_arg: str, cli_overrides: dict, trial: declare.Trial,
                  workdir: pathlib.Path) -> str:
  """`python launch.py --config FILE --config.K=V ... --workdir=DIR`: the trial alone.

  `cli_overrides` are the sweep's own `--config.*` values (ml_collections'
  `get_override_values`); the trial's overrides follow and win.
  """
  return shlex.join(['python', 'launch.py', '--config', config_arg,
                     *(f'--config.{k}={flag_value(v)}' for k, v in cli_overrides.items()),
                     *(f'--config.{k}={flag_value(v)}' for k, v in trial.overrides.items()),
                     f'--workdir={workdir}'])
