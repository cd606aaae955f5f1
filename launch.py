"""Trains a character-level language model: `python launch.py --config configs/shakespeare.py`.

Flags here, everything else in `seqlab.command`: `run` trains (re-running with
the same --workdir resumes), `sweep` runs the config file's `get_sweep()` trials.
"""

if __name__ == '__main__':  # the command, not an import: before numpy and JAX start threads
  from seqlab import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.reuse_freed_memory()

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from seqlab import command

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
    'trial', [], 'With --sweep: run only the trials of these names.')
_EXECUTOR = flags.DEFINE_enum(
    'executor', 'local', ['local', 'ray'], 'With --sweep: run trials as local processes, or as '
    'Ray tasks (pip install -r requirements-ray.txt).')
_ADDRESS = flags.DEFINE_string(
    'address', None, 'With --executor ray: the Ray cluster (HOST:PORT or auto); default: start '
    'a local Ray instance with --parallel CPUs.')
_EARLY_STOP = flags.DEFINE_string(
    'early_stop', None, 'With --sweep: successive halving (ASHA) at rungs: a step (the first '
    'rung; then x eta, x eta^2, ... before train.num_steps) or steps separated by commas. At '
    'each rung a trial continues only if its val loss is among the best 1/eta of the trials '
    'that reached it so far; the decisions go to SWEEP_DIR/halving.jsonl.')
_EARLY_STOP_ETA = flags.DEFINE_integer(
    'early_stop_eta', None, 'With --early_stop: the reduction factor eta (default 3): about 1 '
    'in eta trials continues at each rung, and a single --early_stop step grows by it.')
flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  command.check_flags(sweep=_SWEEP.value, parallel=_PARALLEL.value, fused=_FUSED.value,
                      trials=_TRIALS.value, executor=_EXECUTOR.value, address=_ADDRESS.value,
                      early_stop=_EARLY_STOP.value, early_stop_eta=_EARLY_STOP_ETA.value)
  logging.set_verbosity(logging.WARNING)  # orbax logs every step of a save at INFO
  config_arg = config_flags.get_config_filename(flags.FLAGS['config'])
  if _SWEEP.value:
    command.exit_with(command.sweep, _CONFIG.value, config_arg,
                      config_flags.get_override_values(flags.FLAGS['config']), _WORKDIR.value,
                      parallel=_PARALLEL.value, fused=_FUSED.value, only=_TRIALS.value,
                      executor=_EXECUTOR.value, address=_ADDRESS.value,
                      early_stop=_EARLY_STOP.value, early_stop_eta=_EARLY_STOP_ETA.value)
  command.exit_with(command.run, _CONFIG.value, _WORKDIR.value, config_arg)


if __name__ == '__main__':
  app.run(main, flags_parser=command.parse_flags)
