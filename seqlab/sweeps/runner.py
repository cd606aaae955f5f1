"""Running a sweep's trials as processes: one at a time, or N at once; resumable.

    SWEEP_DIR/sweep.json       every trial: overrides, command, status, exit status, error
    SWEEP_DIR/logs/NAME.log    each trial's console output
    SWEEP_DIR/NAME/            each trial's run directory (an ordinary run)

Each trial is `python launch.py --config ... --config.KEY=VALUE ... --workdir
SWEEP_DIR/NAME`, the command printed for it, so any trial can be re-run alone.
Re-running the sweep skips finished trials (results.json at train.num_steps)
and re-runs the others, which resume from their checkpoints. A failed trial
(bad config, NaN, crash) is recorded and the others go on; the sweep exits 1 at
the end if any failed. With `--parallel N`, each trial gets its own GPU where
there are GPUs, else its own share of the CPU cores (CPU affinity confines all
of the trial's threads to them), so N trials never oversubscribe the machine.
SIGTERM/SIGINT are passed on to the running trials, which checkpoint and stop.

With `--fused`, trials that share array shapes run as one process that trains
them together (`seqlab.fused`); its console output is logs/fused-K.log.
With `--executor ray`, the same commands run as Ray tasks (`seqlab.ray_executor`).
"""

import dataclasses
import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time

import numpy as np

from seqlab import interrupts
from seqlab.run import recorder
from seqlab.run import directory as rundir
from seqlab.run import lock as run_lock
from seqlab.sweeps import declare as sweep_lib
from seqlab.errors import SeqlabError

STATUS_FILENAME = 'sweep.json'
LAUNCH = pathlib.Path(__file__).resolve().parents[2] / 'launch.py'


@dataclasses.dataclass(frozen=True)
class Slot:
  """Where one trial runs: environment variables and the CPUs it may use (None: all)."""
  label: str
  env: dict
  cpus: frozenset | None = None


def visible_gpus() -> list[str]:
  """NVIDIA GPUs this process may use, found without initializing any framework."""
  listed = os.environ.get('CUDA_VISIBLE_DEVICES')
  if listed is not None:
    return [d.strip() for d in listed.split(',') if d.strip() and d.strip() != '-1']
  driver = pathlib.Path('/proc/driver/nvidia/gpus')
  return [str(i) for i in range(len(list(driver.iterdir())))] if driver.is_dir() else []


def make_slots(parallel: int) -> list[Slot]:
  """`parallel` places to run trials: a GPU each, or disjoint sets of CPU cores."""
  if parallel < 1:
    raise ValueError(f'--parallel must be >= 1, got {parallel}')
  gpus = visible_gpus()
  if gpus:
    return [Slot(f'GPU {g}', {'CUDA_VISIBLE_DEVICES': g}) for g in gpus[:parallel]]
  if parallel == 1:
    return [Slot('all CPUs', {})]
  cpus = sorted(os.sched_getaffinity(0))
  chunks = np.array_split(cpus, min(parallel, len(cpus)))
  return [Slot(f'CPUs {",".join(map(str, c))}', {}, frozenset(int(x) for x in c))
          for c in chunks]


def flag_value(value) -> str:
  """A config value as ml_collections' config flags parse it."""
  return value if isinstance(value, str) else repr(value)


def trial_command(config_arg: str, cli_overrides: list[str], trial: sweep_lib.Trial,
                  sweep_dir: pathlib.Path) -> list[str]:
  return [sys.executable, str(LAUNCH), '--config', config_arg, *cli_overrides,
          *(f'--config.{k}={flag_value(v)}' for k, v in trial.overrides.items()),
          f'--workdir={sweep_dir / trial.name}']


def printable(command: list[str]) -> str:
  """The command as a user types it: `python launch.py ...`."""
  shown = ['python', 'launch.py'] + command[2:] if command[1] == str(LAUNCH) else command
  return shlex.join(shown)


def fused_command(config_arg: str, cli_overrides: list[str], trials: list[sweep_lib.Trial],
                  sweep_dir: pathlib.Path) -> list[str]:
  """The command that trains `trials` (one fused group) together in one process."""
  return [sys.executable, str(LAUNCH), '--config', config_arg, *cli_overrides, '--sweep',
          '--fused', f'--workdir={sweep_dir}', *(f'--trial={t.name}' for t in trials)]


@dataclasses.dataclass(frozen=True)
class Task:
  """One process of the sweep: a trial, or a fused group of trials."""
  name: str  # its log is logs/<name>.log
  trials: tuple
  command: list


def is_finished(run_dir: pathlib.Path, num_steps: int) -> bool:
  results = rundir.load_json(run_dir / rundir.RESULTS_FILENAME)
  return results is not None and results.get('steps') == num_steps


def _error_line(log_path: pathlib.Path, trial_name: str) -> str:
  """A failed trial's `error: ...` line in the log (`error: [NAME] ...` in a fused group's),
  else the log's last line."""
  lines = log_path.read_text(encoding='utf-8', errors='replace').strip().splitlines() \
      if log_path.exists() else []
  own = [line for line in lines if line.startswith(f'error: [{trial_name}] ')]
  errors = own or [line for line in lines if line.startswith('error: ')]
  return (errors or lines or ['(no output)'])[-1][:500]


class SweepRun:
  """The trials of one sweep directory and their status, saved to sweep.json."""

  def __init__(self, sweep_dir: pathlib.Path, trials: list[sweep_lib.Trial],
               commands: dict[str, list[str]]):
    self.sweep_dir, self.trials = sweep_dir, trials
    self.status = {t.name: {'overrides': t.overrides, 'command': printable(commands[t.name]),
                            'status': 'pending'} for t in trials}

  def save(self) -> None:
    rundir.write_atomic(self.sweep_dir / STATUS_FILENAME,
                        json.dumps({'trials': self.status}, indent=2, default=str))

  def record(self, name: str, **fields) -> None:
    self.status[name].update(fields)
    self.save()


def run_sweep(sweep_dir: pathlib.Path, trials: list[sweep_lib.Trial],
              commands: dict[str, list[str]], parallel: int = 1,
              fused_command_for=None, executor: str = 'local',
              address: str | None = None) -> int:
  """Runs the trials not yet finished; returns the sweep's exit status.

  `fused_command_for(trials)`, if given, fuses trials that share shapes: it
  returns the command that trains such a group in one process. `executor`
  'ray' runs the same commands as Ray tasks (`seqlab.ray_executor`), on the
  cluster at `address` or on a local instance.
  """
  if executor not in ('local', 'ray'):
    raise SeqlabError(f"unknown --executor {executor!r}; use 'local' or 'ray'")
  sweep_dir = pathlib.Path(sweep_dir)
  sweep_dir.mkdir(parents=True, exist_ok=True)
  (sweep_dir / 'logs').mkdir(exist_ok=True)
  with run_lock.hold(sweep_dir), interrupts.catch_stop_signals(
      'passing it on: running trials checkpoint and stop') as stop:
    sweep = SweepRun(sweep_dir, trials, commands)
    todo = []
    for trial in trials:
      if is_finished(sweep_dir / trial.name, trial.config.train.num_steps):
        sweep.status[trial.name]['status'] = 'done'
      else:
        todo.append(trial)
    sweep.save()
    if fused_command_for is None:
      tasks = [Task(t.name, (t,), commands[t.name]) for t in todo]
    else:
      from seqlab.sweeps import fused  # pylint: disable=g-import-not-at-top
      groups = fused.group([(t, sweep_dir / t.name) for t in todo])
      tasks = [Task(f'fused-{i}', tuple(t for t, _ in g), fused_command_for([t for t, _ in g]))
               for i, g in enumerate(groups)]
    total = len(trials)
    print(f'sweep {sweep_dir}: {total} trials, {total - len(todo)} already done, {len(todo)} to '
          f'run' + (f' in {len(tasks)} fused group(s)' if fused_command_for else ''), end='')
    if executor == 'ray':
      print(' as Ray tasks', flush=True)
      from seqlab.sweeps import ray_tasks as ray_executor  # pylint: disable=g-import-not-at-top
      for task in tasks:
        _write_log_header(sweep, task)
      ray_executor.run(sweep, tasks, stop, address, parallel,
                       lambda task, trial, code, seconds, node: _finish(
                           sweep, task, trial, code, seconds, slot=node))
    else:
      slots = make_slots(parallel)
      print(f' on {len(slots)} slot(s): {"; ".join(s.label for s in slots)}', flush=True)
      _run(sweep, tasks, slots, stop)
    return _conclude(sweep, stop)


def _run(sweep: SweepRun, todo: list[Task], slots: list[Slot],
         stop: interrupts.StopRequest) -> None:
  running = {}  # slot index -> (task, process, start time, log file)
  forwarded = False
  try:
    while todo or running:
      free = [i for i in range(len(slots)) if i not in running]
      while stop.signum is None and todo and free:
        slot_index, task = free.pop(0), todo.pop(0)
        running[slot_index] = _start(sweep, task, slots[slot_index])
      if stop.signum is not None and not forwarded:
        for _, process, _, _ in running.values():
          process.send_signal(stop.signum)
        forwarded = True
      for slot_index, (task, process, started, log) in list(running.items()):
        if process.poll() is None:
          continue
        log.close()
        del running[slot_index]
        for trial in task.trials:
          _finish(sweep, task, trial, process.returncode, time.perf_counter() - started)
      if stop.signum is not None and not running:
        break
      time.sleep(0.1)
  except KeyboardInterrupt:  # a second Ctrl-C: stop the trials at once too
    for _, process, _, _ in running.values():
      process.send_signal(signal.SIGINT)
    raise


def _conclude(sweep: SweepRun, stop: interrupts.StopRequest) -> int:
  """Prints the summary; the sweep's exit status: 128 + signal if stopped, 1 if a trial failed."""
  total = len(sweep.trials)
  failed = [n for n, s in sweep.status.items() if s['status'] == 'failed']
  print(summary(sweep), flush=True)
  if stop.signum is not None:
    print(f'sweep stopped by {signal.Signals(stop.signum).name}; re-run the same command to '
          'continue it', file=sys.stderr, flush=True)
    return 128 + stop.signum
  if failed:
    print(f'error: {len(failed)} of {total} trials failed: {", ".join(failed)} (see '
          f'{sweep.sweep_dir / STATUS_FILENAME} and logs/)', file=sys.stderr, flush=True)
    return 1
  return 0


def _write_log_header(sweep: SweepRun, task: Task) -> None:
  with open(sweep.sweep_dir / 'logs' / f'{task.name}.log', 'a', encoding='utf-8') as log:
    log.write(f'$ {printable(task.command)}\n')


def _start(sweep: SweepRun, task: Task, slot: Slot):
  command = task.command
  _write_log_header(sweep, task)
  log = open(sweep.sweep_dir / 'logs' / f'{task.name}.log', 'a', encoding='utf-8')  # pylint: disable=consider-using-with
  process = subprocess.Popen(  # pylint: disable=consider-using-with
      command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, **slot.env),
      cwd=LAUNCH.parent, start_new_session=True)  # signals reach it only through the sweep
  if slot.cpus:
    # Set while the new interpreter is still starting (single-threaded): every thread it
    # starts later, XLA's pool included, inherits these CPUs (checked in /proc). (No
    # preexec_fn: it is not fork-safe in a process with threads.)
    try:
      os.sched_setaffinity(process.pid, slot.cpus)
    except ProcessLookupError:  # it has already exited; _finish records how
      pass
  for trial in task.trials:
    sweep.record(trial.name, status='running', slot=slot.label, pid=process.pid, log=task.name)
  names = ', '.join(t.name for t in task.trials)
  print(f'start {names if len(task.trials) == 1 else f"{task.name} ({names})"} on '
        f'{slot.label}: {printable(command)}', flush=True)
  return task, process, time.perf_counter(), log


def _finish(sweep: SweepRun, task: Task, trial: sweep_lib.Trial, returncode: int,
            seconds: float, slot: str | None = None) -> None:
  log_path = sweep.sweep_dir / 'logs' / f'{task.name}.log'
  fields = {'exit_status': returncode, 'seconds': round(seconds, 1), 'pid': None}
  if slot is not None:
    fields['slot'] = slot
  if is_finished(sweep.sweep_dir / trial.name, trial.config.train.num_steps):
    results = rundir.load_json(sweep.sweep_dir / trial.name / rundir.RESULTS_FILENAME) or {}
    sweep.record(trial.name, status='done', error=None, **fields)
    print(f'done  {trial.name} in {recorder.duration(seconds)}: best val loss '
          f'{results.get("best_val_loss", float("nan")):.4f}', flush=True)
  elif returncode in (128 + signal.SIGTERM, 128 + signal.SIGINT, -signal.SIGTERM,
                      -signal.SIGINT):  # negative: the signal came before its handler was set
    sweep.record(trial.name, status='interrupted', error=None, **fields)
    print(f'stopped {trial.name}; re-run the sweep to continue it from its last checkpoint',
          flush=True)
  else:
    error = _error_line(log_path, trial.name)
    sweep.record(trial.name, status='failed', error=error, **fields)
    print(f'FAILED {trial.name} (exit status {returncode}): {error}', flush=True)


def summary(sweep: SweepRun) -> str:
  lines = ['', '| trial | status | best val loss | at step |', '|---|---|---:|---:|']
  for trial in sweep.trials:
    status = sweep.status[trial.name]
    results = rundir.load_json(sweep.sweep_dir / trial.name / rundir.RESULTS_FILENAME) or {}
    best = results.get('best_val_loss')
    lines.append(f'| {trial.name} | {status["status"]} | '
                 f'{f"{best:.4f}" if best is not None else "-"} | '
                 f'{results.get("best_step", "-")} |')
  return '\n'.join(lines)
