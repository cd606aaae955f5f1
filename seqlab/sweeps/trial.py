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

`--halving_log SWEEP_DIR/halving.jsonl` (a sweep with `--early_stop`) judges the
trial at its rungs (`seqlab.sweeps.halving`): it trains to each rung as a run
stopped there would (`train.train_and_evaluate(stop_at_step=...)`: a checkpoint),
reports its val loss there, and continues, or exits EXIT_STOPPED (stopped at the
rung) or EXIT_WAITING (waiting there for its decision; the sweep starts it again
if it is let through). A rung already decided in the log is not judged again.
A fused group does the same inside its one process (`seqlab.sweeps.fused`).
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
from seqlab import interrupts
from seqlab.errors import SeqlabError
from seqlab.sweeps import halving
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
  parser.add_argument('--halving_log', help="the sweep's decision log (halving.jsonl): judge the "
                      'trials at its rungs')
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
  decisions = halving.DecisionLog.open(args.halving_log) if args.halving_log else None
  if args.group_into or args.fused:
    from seqlab.sweeps import fused  # JAX: only in this process
    if args.fused:
      return fused.run_group(pairs, decisions)
    groups = [[trial.name for trial, _ in group] for group in fused.group(pairs)]
    pathlib.Path(args.group_into).write_text(json.dumps(groups), encoding='utf-8')
    return 0
  ((trial, workdir),) = pairs
  if decisions is None:
    return command.run(trial.config, workdir)
  return run_in_rungs(trial, workdir, decisions)


def run_in_rungs(trial, workdir: pathlib.Path, decisions: halving.DecisionLog) -> int:
  """Trains the trial rung by rung, judged at each (`seqlab.sweeps.halving`); returns 0 at
  the end, EXIT_STOPPED or EXIT_WAITING at a rung."""
  from seqlab import parallel  # pylint: disable=g-import-not-at-top
  parallel.use_cpu_devices(trial.config)  # as command.run: before JAX starts
  parallel.initialize_distributed(trial.config.parallel)
  from seqlab import train  # pylint: disable=g-import-not-at-top
  from seqlab.run import checkpoint  # pylint: disable=g-import-not-at-top
  config, name = trial.config, trial.name
  say = lambda text: print(f'halving: {text}', flush=True)
  with interrupts.catch_stop_signals() as stop:  # a signal between two rungs' trainings
    for number, step in decisions.rungs.of(config.train.num_steps):
      ledger = decisions.read()
      decided, reported = ledger.decision(name, number), ledger.report_of(name, number)
      if decided is None and reported is None:
        saved = checkpoint.latest_step_on_disk(workdir)
        if saved is not None and saved > step:
          say(f'{name} is at step {saved}, past rung {number} (step {step}), which it never '
              'reported: not judged there')
          continue
        train.train_and_evaluate(config, workdir, stop_at_step=step)
        if stop.signum is not None:
          raise interrupts.Interrupted(stop.signum, step)
        meta = halving.checkpoint_meta(workdir, step) or {}
        if meta.get('last_val_step') != step:
          raise SeqlabError(f'{workdir}: no val loss at rung {number} (step {step}) in its '
                            'checkpoint there')
        ledger = decisions.report([halving.Report(name, number, step, meta['last_val_loss'])])
        decided = ledger.decision(name, number)
      if decided is None:
        say(f'{name} waits at rung {number} (step {step}) for more trials to reach it, '
            'checkpointed; the sweep starts it again if it continues')
        return halving.EXIT_WAITING
      if decided['decision'] == halving.STOP:
        say(f'{name} {halving.describe_decision(decided)}; its checkpoint is kept')
        return halving.EXIT_STOPPED
      say(f'{name} {halving.describe_decision(decided)}')
      if stop.signum is not None:
        raise interrupts.Interrupted(stop.signum, step)
  train.train_and_evaluate(config, workdir)
  return 0


if __name__ == '__main__':
  command.exit_with(main)
