"""Trains a character-level language model: `python launch.py --config configs/shakespeare.py`.

Thin by design: flags here, everything else in the `seqlab` library
(`seqlab.train.train_and_evaluate`). Re-running with the same --workdir resumes.
"""

import datetime
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from seqlab import interrupts
from seqlab import train
from seqlab.errors import NonFiniteLossError, SeqlabError

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, optionally with variants: configs/shakespeare.py:smoke',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Run directory (default: runs/<config>-<timestamp>). Re-use it to resume.')
flags.mark_flags_as_required(['config'])


def default_workdir(config_arg: str) -> pathlib.Path:
  name = pathlib.Path(config_arg.split(':')[0]).stem
  variant = config_arg.split(':', 1)[1].replace(',', '-') if ':' in config_arg else ''
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  return pathlib.Path('runs') / '-'.join(filter(None, (name, variant, stamp)))


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
  workdir = _WORKDIR.value or default_workdir(flags.FLAGS['config'].config_filename)
  try:
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
