"""What `launch.py` does, as a library: train one run, or run a sweep of them.

`run` trains (or resumes) one run; `sweep` runs a config file's `get_sweep()`
trials, each in its own process (`seqlab.sweeps.runner`). `exit_with` turns
seqlab's exceptions into one `error: ...` line and their exit status (2 bad
input, 3 NaN, 74 a refused write; `seqlab: ...` and 128 + signal after
SIGTERM/SIGINT). Importing this module, and the sweep, imports no JAX: a sweep's
own process only starts and watches its trials.
"""

import datetime
import pathlib
import sys
from typing import Callable, NoReturn

from absl import app
from absl import flags

from seqlab import interrupts
from seqlab.errors import SeqlabError


def config_name(config_arg: str) -> str:
  """configs/shakespeare.py:cpu,smoke -> shakespeare-cpu-smoke"""
  path, _, variants = config_arg.partition(':')
  return '-'.join(filter(None, (pathlib.Path(path).stem, variants.replace(',', '-'))))


def default_workdir(config_arg: str) -> pathlib.Path:
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  return pathlib.Path('runs') / f'{config_name(config_arg)}-{stamp}'


def default_sweep_dir(config_arg: str) -> pathlib.Path:
  # No timestamp: the same command finds the same sweep again and resumes it.
  return pathlib.Path('runs') / f'{config_name(config_arg)}-sweep'


def exit_with(main: Callable[..., int | None], *args, **kwargs) -> NoReturn:
  """Exits with `main(...)`'s status, or with one line and the status of its error."""
  try:
    status = main(*args, **kwargs)
  except interrupts.Interrupted as e:
    print(f'seqlab: {e}', file=sys.stderr, flush=True)
    sys.exit(e.exit_status)
  except SeqlabError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(e.exit_status)
  sys.exit(status or 0)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with bad --config overrides as one line instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    if 'Error whilst parsing config file' in str(e):
      # What the config file's get_config raised (an unknown variant), which ml_collections
      # wraps in its traceback: the original exception, at the end of the chain, is one line.
      root = e
      while root.__context__ is not None:
        root = root.__context__
      print(f'error: {root}', file=sys.stderr)
      sys.exit(2)
    message = ' '.join(str(e).replace('\\n', ' ').replace('\\', '').replace("'", '').split())
    if isinstance(e, (AttributeError, KeyError)):
      message = f'unknown config field {message}'
    print(f'error: bad flag or config override: {message}', file=sys.stderr)
    sys.exit(2)


def check_flags(*, sweep: bool, parallel: int, fused: bool, trials: list[str], executor: str,
                address: str | None, early_stop: str | None = None,
                early_stop_eta: int | None = None) -> None:
  """Raises app.UsageError for flags that only a sweep takes, given without --sweep."""
  if parallel < 1 or (parallel != 1 and not sweep):
    raise app.UsageError('--parallel N needs --sweep and N >= 1')
  if (fused or trials) and not sweep:
    raise app.UsageError('--fused and --trial need --sweep')
  if (executor != 'local' or address) and not sweep:
    raise app.UsageError('--executor and --address need --sweep')
  if address and executor != 'ray':
    raise app.UsageError('--address needs --executor ray')
  if (early_stop is not None or early_stop_eta is not None) and not sweep:
    raise app.UsageError('--early_stop and --early_stop_eta need --sweep')
  if early_stop_eta is not None and early_stop is None:
    raise app.UsageError('--early_stop_eta needs --early_stop')


def run(config, workdir: str | pathlib.Path | None, config_arg: str | None = None) -> int:
  """Trains (or resumes) the run in `workdir` (default: runs/<config>-<timestamp>).

  Also the process of a sweep's trial. JAX is imported here, after the CPU
  device count is set and before anything starts it.
  """
  from seqlab import parallel  # pylint: disable=g-import-not-at-top
  parallel.use_cpu_devices(config)  # before JAX starts; 0: one device per core on a CPU host
  parallel.initialize_distributed(config.parallel)  # a multi-host run: before all else
  if workdir is None:
    if parallel.is_multiprocess():
      raise SeqlabError('a multi-host run needs --workdir on a file system every host shares')
    workdir = default_workdir(config_arg or 'run')
  from seqlab import train  # pylint: disable=g-import-not-at-top
  train.train_and_evaluate(config, workdir)
  return 0


def sweep(config, config_arg: str, cli_overrides: dict, workdir=None, *, parallel: int = 1,
          fused: bool = False, only: list[str] = (), executor: str = 'local',
          address: str | None = None, early_stop: str | None = None,
          early_stop_eta: int | None = None) -> int:
  """Runs the trials of `config_arg`'s `get_sweep()` on `config`; returns the exit status.

  `config` is the config file's, with the command line's `--config.*` values
  (`cli_overrides`, recorded in each trial's re-run command); `only` keeps the
  trials of these names. `early_stop`/`early_stop_eta`: successive halving at rungs
  (`seqlab.sweeps.halving`).
  """
  from seqlab.sweeps import declare, handoff, runner  # pylint: disable=g-import-not-at-top
  trials = declare.make_trials(config, declare.declared_in(config_arg))
  if only:
    unknown = set(only) - {t.name for t in trials}
    if unknown:
      raise SeqlabError(f'--trial {sorted(unknown)}: not in the sweep of {config_arg}')
    trials = [t for t in trials if t.name in only]
  sweep_dir = pathlib.Path(workdir or default_sweep_dir(config_arg))
  if sweep_dir.exists() and not sweep_dir.is_dir():
    raise SeqlabError(f'--workdir {sweep_dir} is a file, not a sweep directory; use another path')
  if only and (early_stop is not None or (sweep_dir / 'halving.jsonl').exists()):
    # A rung judges a trial against every trial of the sweep that may still reach it.
    raise SeqlabError('--trial and early stopping do not mix: successive halving judges the '
                      'trials of the whole sweep; run it without --trial')
  commands = {t.name: handoff.rerun_command(config_arg, cli_overrides, t, sweep_dir / t.name)
              for t in trials}
  return runner.run_sweep(sweep_dir, trials, commands, parallel, fused, executor, address,
                          early_stop, early_stop_eta)
