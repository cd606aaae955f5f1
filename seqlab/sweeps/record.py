"""What a sweep records: SWEEP_DIR/sweep.json, each trial's outcome, the summary table.

JAX-free, like all of the sweep's own process: `seqlab.analysis.compare` and
the run recorder (`duration`) import from here too.
"""

import json
import pathlib

from seqlab.run import directory as rundir
from seqlab.sweeps import halving

STATUS_FILENAME = 'sweep.json'


def duration(seconds: float) -> str:
  """`4m07s`, or `2h03m` from an hour on."""
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds // 60 % 60:02d}m' if seconds >= 3600 else \
      f'{seconds // 60}m{seconds % 60:02d}s'


def is_finished(run_dir: pathlib.Path, num_steps: int) -> bool:
  results = rundir.load_json(run_dir / rundir.RESULTS_FILENAME)
  return results is not None and results.get('steps') == num_steps


def error_line(log_path: pathlib.Path, trial_name: str) -> str:
  """A failed trial's `error: ...` line in the log (`error: [NAME] ...` in a fused group's),
  else the log's last line."""
  lines = log_path.read_text(encoding='utf-8', errors='replace').strip().splitlines() \
      if log_path.exists() else []
  own = [line for line in lines if line.startswith(f'error: [{trial_name}] ')]
  errors = own or [line for line in lines if line.startswith('error: ')]
  return (errors or lines or ['(no output)'])[-1][:500]


class SweepRun:
  """The trials of one sweep directory and their status, saved to sweep.json.

  `commands[name]` is what re-runs that trial alone (`python launch.py ...`).
  """

  def __init__(self, sweep_dir: pathlib.Path, trials: list, commands: dict[str, str]):
    self.sweep_dir, self.trials = pathlib.Path(sweep_dir), trials
    self.status = {t.name: {'overrides': t.overrides, 'command': commands[t.name],
                            'status': 'pending'} for t in trials}
    self.fused_tasks = 0  # fused groups started so far: the next is logs/fused-<this>.log

  def save(self) -> None:
    rundir.write_atomic(self.sweep_dir / STATUS_FILENAME,
                        json.dumps({'trials': self.status}, indent=2, default=str))

  def record(self, name: str, **fields) -> None:
    self.status[name].update(fields)
    self.save()


def summary(sweep: SweepRun) -> str:
  """A markdown table: each trial's status and best val loss (so far, for a trial stopped
  at a rung)."""
  lines = ['', '| trial | status | best val loss | at step |', '|---|---|---:|---:|']
  for trial in sweep.trials:
    status = sweep.status[trial.name]
    run_dir = sweep.sweep_dir / trial.name
    results = rundir.load_json(run_dir / rundir.RESULTS_FILENAME) or \
        halving.read_stopped(run_dir) or {}
    best = results.get('best_val_loss')
    lines.append(f'| {trial.name} | {status["status"]} | '
                 f'{f"{best:.4f}" if best is not None else "-"} | '
                 f'{results.get("best_step", "-")} |')
  return '\n'.join(lines)
