"""Trains a character-level language model: `python launch.py --config configs/shakespeare.py`.

Thin by design: flags here, everything else in the `seqlab` library
(`seqlab.train.train_and_evaluate`). Re-running with the same --workdir resumes.
`--sweep` runs the config file's `get_sweep()` trials instead (`seqlab.sweep_run`).
"""

import datetime
import pathlib
import sys

if __name__ == '__main__':  # the command, not an import: before numpy and JAX start threads
  from seqlab import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.reuse_freed_memory()

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from seqlab import interrupts
from seqlab import parallel
from seqlab.sweeps import declare as sweep
from seqlab.sweeps import runner as sweep_run
from seqlab import train
from seqlab.errors import NonFiniteLossError, SeqlabError

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, optionally with variants: configs/shakespeare.py:smoke',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Run directory (default: runs/<config>-<timestamp>). Re-use it to resume.')
_SWEEP = flags.DEFINE_bool(
    'sweep', False, "Run the config file's get_sweep() trials, each in --workdir/<trial name> "
    '(default --workdir: runs/<config>-sweep); re-running resumes the sweep.')
_PARALLEL = flags.DEFINE_integer(
    'parallel', 1, 'With --sweep: trials run at once, each on its own GPU or share of CPU cores.')
_FUSED = flags.DEFINE_bool(
    'fused', False, 'With --sweep: train trials that share array shapes together, in one '
    'compiled step (jax.vmap); each still gets its own run directory.')
_TRIALS = flags.DEFINE_multi_string(
    'trial', [], 'With --sweep: run only the trials of these names (the sweep passes them to '
    'the process of a fused group).')
_EXECUTOR = flags.DEFINE_enum(
    'executor', 'local', ['local', 'ray'], 'With --sweep: run trials as local processes, or as '
    'Ray tasks (pip install -r requirements-ray.txt).')
_ADDRESS = flags.DEFINE_string(
    'address', None, 'With --executor ray: the Ray cluster (HOST:PORT or auto); default: start '
    'a local Ray instance with --parallel CPUs.')
flags.mark_flags_as_required(['config'])


def _config_name(config_arg: str) -> str:
  """configs/shakespeare.py:cpu,smoke -> shakespeare-cpu-smoke"""
  path, _, variants = config_arg.partition(':')
  return '-'.join(filter(None, (pathlib.Path(path).stem, variants.replace(',', '-'))))


def default_workdir(config_arg: str) -> pathlib.Path:
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  return pathlib.Path('runs') / f'{_config_name(config_arg)}-{stamp}'


def config_overrides(argv: list[str]) -> list[str]:
  """The --config.KEY=VALUE arguments of a command line (also `--config.KEY VALUE`)."""
  found = []
  for i, arg in enumerate(argv):
    if arg.startswith('--config.'):
      found.append(arg if '=' in arg or i + 1 >= len(argv) else f'{arg}={argv[i + 1]}')
  return found


def launch_sweep(config_arg: str, workdir: pathlib.Path | None) -> int:
  trials = sweep.make_trials(_CONFIG.value, sweep.declared_in(config_arg))
  if _TRIALS.value:
    unknown = set(_TRIALS.value) - {t.name for t in trials}
    if unknown:
      raise SeqlabError(f'--trial {sorted(unknown)}: not in the sweep of {config_arg}')
    trials = [t for t in trials if t.name in _TRIALS.value]
  # No timestamp: the same command finds the same sweep again and resumes it.
  workdir = pathlib.Path(workdir or f'runs/{_config_name(config_arg)}-sweep')
  if workdir.exists() and not workdir.is_dir():
    raise SeqlabError(f'--workdir {workdir} is a file, not a sweep directory; use another path')
  if _TRIALS.value and _FUSED.value:  # this process is one fused group of a sweep
    from seqlab.sweeps import fused  # pylint: disable=g-import-not-at-top
    return fused.run_group([(t, workdir / t.name) for t in trials])
  overrides = config_overrides(sys.argv[1:])
  commands = {t.name: sweep_run.trial_command(config_arg, overrides, t, workdir) for t in trials}
  fused_command_for = (lambda group: sweep_run.fused_command(config_arg, overrides, group,
                                                             workdir)) if _FUSED.value else None
  return sweep_run.run_sweep(workdir, trials, commands, _PARALLEL.value, fused_command_for,
                             _EXECUTOR.value, _ADDRESS.value)


def parse_flags(argv):
  """absl's flag parsing, with bad --config overrides as one line instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    message = ' '.join(str(e).replace('\\n', ' ').replace('\\', '').replace("'", '').split())
    if isinstance(e, (AttributeError, KeyError)):
      message = f'unknown config field {message}'
    print(f'error: bad flag or config override: {message}', file=sys.stderr)
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # orbax logs every step of a save at INFO
  config_arg = flags.FLAGS['config'].config_filename
  if _PARALLEL.value < 1 or (_PARALLEL.value != 1 and not _SWEEP.value):
    raise app.UsageError('--parallel N needs --sweep and N >= 1')
  if (_FUSED.value or _TRIALS.value) and not _SWEEP.value:
    raise app.UsageError('--fused and --trial need --sweep')
  if (_EXECUTOR.value != 'local' or _ADDRESS.value) and not _SWEEP.value:
    raise app.UsageError('--executor and --address need --sweep')
  if _ADDRESS.value and _EXECUTOR.value != 'ray':
    raise app.UsageError('--address needs --executor ray')
  try:
    if _SWEEP.value:
      sys.exit(launch_sweep(config_arg, _WORKDIR.value))
    parallel.use_cpu_devices(_CONFIG.value.parallel.get('cpu_devices', 0))  # before JAX starts
    parallel.initialize_distributed(_CONFIG.value.parallel)  # a multi-host run: before all else
    workdir = _WORKDIR.value or default_workdir(config_arg)
    if parallel.is_multiprocess() and not _WORKDIR.value:
      raise SeqlabError('a multi-host run needs --workdir on a file system every host shares')
    train.train_and_evaluate(_CONFIG.value, workdir)
  except interrupts.Interrupted as e:
    print(f'seqlab: {e}', file=sys.stderr)
    sys.exit(e.exit_status)
  except NonFiniteLossError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(3)
  except SeqlabError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
