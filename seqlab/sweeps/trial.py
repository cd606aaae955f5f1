"""The process of one task of a sweep: `python -m seqlab.sweeps.trial --trial_json F --workdir D`.

One `--trial_json FILE --workdir DIR` pair trains that trial as `launch.py`
trains a run (`seqlab.command.run`); several pairs with `--fused` train them
as one fused group (`seqlab.sweeps.fused.run_group`, which prints `error:
[NAME] ...` per failed trial). FILE is what the sweep wrote
(`seqlab.sweeps.handoff`): the trial's complete config, so this process never
reads the config file. Errors are one `error:` line and the exception's exit
status, as in `launch.py`; SIGTERM/SIGINT/SIGHUP checkpoint and exit
143/130/129. Started by a sweep (with $SEQLAB_PARENT_PID), the process gets
SIGTERM when the sweep's process ends, however it ends
(`interrupts.end_with_parent`): a trial never outlives its sweep.

`--group_into OUT` trains nothing: it writes the fused groups of the given
trials (lists of names, `seqlab.sweeps.fused.group`) to OUT as JSON, so that
the sweep's own process never imports JAX.
"""

if __name__ == '__main__':  # before numpy and JAX start threads (seqlab/host_memory.py)
  from seqlab import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.reuse_freed_memory()
  from seqlab import interrupts  # pylint: disable=g-import-not-at-top
  interrupts.end_with_parent()  # SIGTERM (checkpoint, stop) when the sweep's process ends

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import json
import pathlib

from absl import logging

from seqlab import command
from seqlab.errors import SeqlabError
from seqlab.sweeps import handoff


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog=f'python -m {handoff.ENTRY}', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--trial_json', action='append', default=[], required=True,
                      help="a trial's file (SWEEP_DIR/trials/NAME.json); repeat for a group")
  parser.add_argument('--workdir', action='append', default=[], required=True,
                      help='the run directory of the --trial_json before it')
  parser.add_argument('--fused', action='store_true', help='train the trials as one group')
  parser.add_argument('--group_into', help='write the fused groups to this file; train nothing')
  args = parser.parse_args(argv)
  if len(args.trial_json) != len(args.workdir):
    parser.error('give one --workdir per --trial_json')
  if len(args.trial_json) > 1 and not (args.fused or args.group_into):
    parser.error('several trials need --fused (or --group_into)')
  return args


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  logging.set_verbosity(logging.WARNING)  # orbax logs every step of a save at INFO
  pairs = []
  for path, workdir in zip(args.trial_json, args.workdir):
    try:
      pairs.append((handoff.read_trial(path), pathlib.Path(workdir)))
    except (OSError, ValueError, KeyError) as e:
      raise SeqlabError(f'cannot read the trial file {path}: {e}') from None
  if args.group_into or args.fused:
    from seqlab.sweeps import fused  # JAX: only in this process
    if args.fused:
      return fused.run_group(pairs)
    groups = [[trial.name for trial, _ in group] for group in fused.group(pairs)]
    pathlib.Path(args.group_into).write_text(json.dumps(groups), encoding='utf-8')
    return 0
  ((trial, workdir),) = pairs
  return command.run(trial.config, workdir)


if __name__ == '__main__':
  command.exit_with(main)
