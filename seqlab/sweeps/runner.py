"""Running a sweep's trials as processes: one at a time, or N at once; resumable.

    SWEEP_DIR/sweep.json       every trial: overrides, command, status, exit status, error
    SWEEP_DIR/trials/NAME.json each trial's complete config, for its process
    SWEEP_DIR/logs/NAME.log    each trial's console output
    SWEEP_DIR/NAME/            each trial's run directory (an ordinary run)

Each trial runs as `python -m seqlab.sweeps.trial --trial_json
SWEEP_DIR/trials/NAME.json --workdir SWEEP_DIR/NAME` (`seqlab.sweeps.handoff`);
sweep.json records the `python launch.py ...` that re-runs it alone, which the
sweep prints. Re-running the sweep skips finished trials (results.json at
train.num_steps) and re-runs the others, which resume from their checkpoints.
A failed trial (bad config, NaN, crash) is recorded with its `error:` line and
the others go on; the sweep exits 1 at the end if any failed. With `--parallel
N`, each trial gets its own GPU where there are GPUs, else its own share of the
CPU cores (CPU affinity confines all of the trial's threads to them), so N
trials never oversubscribe the machine. SIGTERM/SIGINT/SIGHUP are passed on
to the running trials, which checkpoint and stop. A trial never outlives the
sweep's process: if that dies (kill -9 included), each trial gets SIGTERM
(`interrupts.end_with_parent`) and checkpoints and stops. A trial whose run
directory is in use by a live process (a trial of an earlier sweep process
still stopping, or the trial run alone) is not started, and not failed: the
sweep says so and starts it when that process has ended, other trials first.

With `--fused`, trials that share array shapes run as one process that trains
them together (`seqlab.sweeps.fused`); its console output is logs/fused-K.log.
With `--executor ray`, the same commands run as Ray tasks (`seqlab.sweeps.ray_tasks`).
This process imports no JAX: the fused groups are found by a short child process.

With `--early_stop`, trials are judged at rungs (`seqlab.sweeps.halving`,
SWEEP_DIR/halving.jsonl): the trial processes report and learn their decisions
themselves; this process (`EarlyStopping`) records the trials stopped at a rung
(status `stopped at rung N (step S)`, stopped.json in the run directory, an
HParams session) and those waiting at one, starts a waiting trial again when it
is let through, and closes the lowest rung that trials wait at when it has
nothing else to run. A re-run skips stopped trials and keeps waiting ones
waiting: the log's decisions stand.
"""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

from seqlab import interrupts
from seqlab.run import directory as rundir
from seqlab.run import lock as run_lock
from seqlab.sweeps import declare as sweep_lib
from seqlab.sweeps import halving
from seqlab.sweeps import handoff
from seqlab.sweeps import hparams
from seqlab.sweeps import record
from seqlab.sweeps.record import STATUS_FILENAME  # also read as runner.STATUS_FILENAME
from seqlab.sweeps.record import SweepRun, duration, summary
from seqlab.errors import SeqlabError

PACKAGE_ROOT = pathlib.Path(__file__).resolve().parents[2]  # where `seqlab` imports from
# A trial's exit status when a signal stopped it: 128 + signal after its checkpoint, or minus
# the signal if it came before the trial's handler was set.
_STOPPED = frozenset(x for s in interrupts.STOP_SIGNALS for x in (128 + s, -s))


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
  count = min(parallel, len(cpus))
  # Contiguous chunks whose sizes differ by at most one (numpy's array_split).
  bounds = [len(cpus) * i // count for i in range(count + 1)]
  chunks = [cpus[bounds[i]:bounds[i + 1]] for i in range(count)]
  return [Slot(f'CPUs {",".join(map(str, c))}', {}, frozenset(c)) for c in chunks]


def child_env(extra: dict | None = None) -> dict:
  """The environment of a trial's process: this one's, `extra`, `seqlab` importable, and
  this process's pid, whose end the trial ends with (`interrupts.end_with_parent`)."""
  path = os.pathsep.join(filter(None, (str(PACKAGE_ROOT), os.environ.get('PYTHONPATH'))))
  return dict(os.environ, **(extra or {}), PYTHONPATH=path,
              **{interrupts.PARENT_PID_ENV: str(os.getpid())})


@dataclasses.dataclass(frozen=True)
class Task:
  """One process of the sweep: a trial, or a fused group of trials."""
  name: str  # its log is logs/<name>.log
  trials: tuple
  command: list
  fused: bool = False


def _command(sweep_dir: pathlib.Path, trials: list, fused: bool = False,
             halving_log: pathlib.Path | None = None) -> list[str]:
  """The process of `trials` (written by `handoff.write_trial`): one, or a fused group."""
  return handoff.task_command([(handoff.trial_path(sweep_dir, t.name), sweep_dir / t.name)
                               for t in trials], fused, halving_log)


def fused_groups(sweep_dir: pathlib.Path, trials: list) -> list[list]:
  """`trials` in fused groups (`seqlab.sweeps.fused.group`), found by a child process."""
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp) / 'groups.json'
    command = [*_command(sweep_dir, trials), f'--group_into={out}']
    done = subprocess.run(command, env=child_env({'JAX_PLATFORMS': 'cpu'}), capture_output=True,
                          text=True, check=False)
    if done.returncode != 0 or not out.exists():
      lines = (done.stderr.strip() or '(no output)').splitlines()
      raise SeqlabError(f'could not group the trials for --fused: {lines[-1]}')
    names = json.loads(out.read_text(encoding='utf-8'))
  by_name = {t.name: t for t in trials}
  return [[by_name[n] for n in group] for group in names]


def run_sweep(sweep_dir: pathlib.Path, trials: list[sweep_lib.Trial], commands: dict[str, str],
              parallel: int = 1, fused: bool = False, executor: str = 'local',
              address: str | None = None, early_stop: str | None = None,
              early_stop_eta: int | None = None) -> int:
  """Runs the trials not yet finished; returns the sweep's exit status.

  `commands[name]` re-runs that trial alone (recorded and printed). `fused`
  trains trials that share shapes together, a process per group. `executor`
  'ray' runs the same processes as Ray tasks (`seqlab.sweeps.ray_tasks`), on
  the cluster at `address` or on a local instance. `early_stop` (rungs) and
  `early_stop_eta`: successive halving (`seqlab.sweeps.halving.parse_rungs`);
  a sweep directory that has a decision log keeps its rungs without them.
  """
  if executor not in ('local', 'ray'):
    raise SeqlabError(f"unknown --executor {executor!r}; use 'local' or 'ray'")
  if early_stop is None and early_stop_eta is not None:
    raise SeqlabError('--early_stop_eta needs --early_stop')
  sweep_dir = pathlib.Path(sweep_dir)
  rungs = halving.parse_rungs(early_stop, early_stop_eta, max(
      t.config.train.num_steps for t in trials)) if early_stop is not None else None
  if rungs is not None:
    halving.check_trials(rungs, trials)
  sweep_dir.mkdir(parents=True, exist_ok=True)
  (sweep_dir / 'logs').mkdir(exist_ok=True)
  with run_lock.hold(sweep_dir), interrupts.catch_stop_signals(
      'passing it on: running trials checkpoint and stop') as stop:
    log = halving.DecisionLog.for_sweep(sweep_dir, rungs)
    if log is not None and rungs is None:
      halving.check_trials(log.rungs, trials)
    sweep = SweepRun(sweep_dir, trials, commands)
    early = EarlyStopping(sweep, log) if log is not None else None
    todo, finished = [], set()
    for trial in trials:
      if record.is_finished(sweep_dir / trial.name, trial.config.train.num_steps):
        sweep.status[trial.name]['status'] = 'done'
        finished.add(trial.name)
      else:
        todo.append(trial)
        handoff.write_trial(sweep_dir, trial)
    if early is not None:
      todo = early.begin(todo)
    sweep.save()
    hparams.write_experiment(sweep_dir, trials, early_stop=early is not None)
    tasks = _tasks(sweep, todo, fused, early)
    total = len(trials)
    held = f', {len(early.held)} waiting at a rung' if early and early.held else ''
    stopped = len(trials) - len(finished) - len(todo) - len(early.held) if early else 0
    print(f'sweep {sweep_dir}: {total} trials, {len(finished)} already done'
          + (f', {stopped} stopped early' if stopped else '') + held
          + f', {len(todo)} to run' + (f' in {len(tasks)} fused group(s)' if fused else '')
          + (f'; early stopping: {log.rungs.describe()}' if log is not None else ''), end='')
    if executor == 'ray':
      print(' as Ray tasks', flush=True)
      while stop.signum is None and any([_busy(sweep, t, report=True) for t in tasks]):
        time.sleep(0.2)  # Ray places tasks itself: all wait until no run directory is in use
      from seqlab.sweeps import ray_tasks  # pylint: disable=g-import-not-at-top
      for task in tasks:
        _write_log_header(sweep, task)

      def more(idle: bool) -> list[Task]:
        new = _tasks(sweep, early.released(idle), fused, early) if early else []
        for task in new:
          _write_log_header(sweep, task)
        return new
      ray_tasks.run(sweep, tasks, stop, address, parallel,
                    lambda task, trial, code, seconds, node: _finish(
                        sweep, task, trial, code, seconds, slot=node, early=early),
                    more=more)
    else:
      slots = make_slots(parallel)
      print(f' on {len(slots)} slot(s): {"; ".join(s.label for s in slots)}', flush=True)
      _run(sweep, tasks, slots, stop, early, fused)
    if early is not None:
      early.settle()
    return _conclude(sweep, stop)


def _tasks(sweep: SweepRun, trials: list, fused: bool,
           early: 'EarlyStopping | None') -> list[Task]:
  """The processes of `trials`: one each, or (`fused`) one per fused group."""
  log_path = early.log.path if early else None
  if not trials:
    return []
  if not fused:
    return [Task(t.name, (t,), _command(sweep.sweep_dir, [t], halving_log=log_path))
            for t in trials]
  first = sweep.fused_tasks
  groups = fused_groups(sweep.sweep_dir, trials)
  sweep.fused_tasks += len(groups)
  return [Task(f'fused-{first + i}', tuple(g), _command(sweep.sweep_dir, g, True, log_path),
               fused=True) for i, g in enumerate(groups)]


class EarlyStopping:
  """The sweep process's side of successive halving (`seqlab.sweeps.halving`).

  The trial processes judge themselves in the log; this records what they
  decided, holds the trials that wait at a rung until their decision, and
  closes a rung (`DecisionLog.close`) when nothing else can run.
  """

  def __init__(self, sweep: SweepRun, log: halving.DecisionLog):
    self.sweep, self.log = sweep, log
    self.held: dict[str, sweep_lib.Trial] = {}  # waiting at a rung, no process running
    self._started = set()  # (trial, rung): started by this process after that rung's decision

  def begin(self, todo: list) -> list:
    """Starts this run of the sweep in the log; returns the trials of `todo` that may train
    (not stopped at a rung, nor waiting at one)."""
    roster = {t.name: len(self.log.rungs.of(t.config.train.num_steps)) for t in self.sweep.trials}
    ledger = self.log.start(roster)
    todo = [t for t in todo if not self._settle(t, ledger)]
    for trial in todo:
      self._note_start(trial, ledger)
    return todo

  def finish(self, trial: sweep_lib.Trial) -> bool:
    """After the trial's process ended: records it if it stopped at a rung or waits at one,
    or holds it if it was let through after its process had left it waiting (True); else
    False (it ended for another reason)."""
    ledger = self.log.read()
    if self._settle(trial, ledger, say=True):
      return True
    last = ledger.last_decision(trial.name)
    if last is not None and last['decision'] == halving.CONTINUE and last.get('waited') and \
        (trial.name, last['rung']) not in self._started:
      self.held[trial.name] = trial  # decided while its process was ending: start it again
      return True
    return False

  def _note_start(self, trial: sweep_lib.Trial, ledger: halving.Ledger) -> None:
    last = ledger.last_decision(trial.name)
    if last is not None:
      self._started.add((trial.name, last['rung']))

  def released(self, idle: bool) -> list:
    """The held trials let through since the last call; `idle` (nothing running or
    queued): first closes the lowest rung that held trials wait at, if none was let through."""
    if not self.held:
      return []
    ledger = self.log.read()
    waiting = ledger.waiting()
    if idle and all(name in waiting for name in self.held):
      rung = min(waiting[name] for name in self.held)
      print(f'halving: nothing else to run; closing rung {rung}: the trials waiting there are '
            'judged among those that reached it', flush=True)
      ledger = self.log.close(rung)
      waiting = ledger.waiting()
    return self._let_through(ledger)

  def settle(self) -> None:
    """When the sweep stops (a signal): records what was decided for the held trials; those
    let through stay `pending`, for the next run of the sweep to start."""
    if self.held:
      self._let_through(self.log.read())

  def _let_through(self, ledger: halving.Ledger) -> list:
    """The held trials that `ledger` lets through (their status now `pending`); records
    those it stopped."""
    out, waiting = [], ledger.waiting()
    for name in [n for n in self.held if n not in waiting]:
      trial = self.held.pop(name)
      if not self._settle(trial, ledger, say=True):
        out.append(trial)
        self._note_start(trial, ledger)
        rung = max(n for n, _ in self.log.rungs.of(trial.config.train.num_steps)
                   if ledger.decision(name, n) is not None)
        print(f'halving: {name} {halving.describe_decision(ledger.decision(name, rung))}',
              flush=True)
        for field in ('rung', 'rung_step'):
          self.sweep.status[name].pop(field, None)
        self.sweep.record(name, status='pending')
    return out

  def _settle(self, trial: sweep_lib.Trial, ledger: halving.Ledger, say: bool = False) -> bool:
    outcome = ledger.outcome(trial.name)
    if outcome is None:
      return False
    kind, event = outcome
    status = halving.status_text(kind, event['rung'], event['step'])
    if kind == 'waiting':
      self.held[trial.name] = trial
      self.sweep.record(trial.name, status=status, rung=event['rung'], rung_step=event['step'],
                        error=None, pid=None)
      if say:
        print(f'halving: {trial.name} waits at rung {event["rung"]} (step {event["step"]}): '
              f'fewer than eta={self.log.rungs.eta} trials have reached it so far', flush=True)
      return True
    run_dir = self.sweep.sweep_dir / trial.name
    if run_dir.is_dir() and halving.read_stopped(run_dir) is None:  # the run directory too
      stopped = halving.stopped_record(run_dir, event)
      hparams.write_stopped_session(run_dir, stopped)
      rundir.write_atomic(run_dir / halving.STOPPED_FILENAME, json.dumps(stopped, indent=2))
    self.sweep.record(trial.name, status=status, rung=event['rung'], rung_step=event['step'],
                      error=None, pid=None)
    if say:
      print(f'halving: {trial.name} {halving.describe_decision(event)}; its checkpoint is '
            'kept', flush=True)
    return True


def _run(sweep: SweepRun, todo: list[Task], slots: list[Slot],
         stop: interrupts.StopRequest, early: EarlyStopping | None = None,
         fused: bool = False) -> None:
  running = {}  # slot index -> (task, process, start time, log file)
  forwarded = False
  try:
    while todo or running or (early and early.held and stop.signum is None):
      free = [i for i in range(len(slots)) if i not in running]
      for task in list(todo) if stop.signum is None else []:
        if free and not _busy(sweep, task, report=True):
          todo.remove(task)
          slot_index = free.pop(0)
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
          _finish(sweep, task, trial, process.returncode, time.perf_counter() - started,
                  early=early)
      if early is not None and stop.signum is None:  # waiting trials let through go first
        todo[:0] = _tasks(sweep, early.released(idle=not todo and not running), fused, early)
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


def _busy(sweep: SweepRun, task: Task, report: bool = False) -> str | None:
  """Who holds the run directory of one of `task`'s trials, if anyone (`run_lock.holder`);
  `report` prints it (and records the trial as waiting) the first time."""
  for trial in task.trials:
    holder = run_lock.holder(sweep.sweep_dir / trial.name)
    if holder is None:
      continue
    if report and sweep.status[trial.name].get('waiting_for') != holder:
      sweep.record(trial.name, status='waiting', waiting_for=holder)
      print(f'waiting for {trial.name}: {sweep.sweep_dir / trial.name} is in use by {holder} '
            '(a trial of an earlier run of this sweep still stopping, or the trial run alone); '
            'it starts when that process ends', flush=True)
    return holder
  return None


def _write_log_header(sweep: SweepRun, task: Task) -> None:
  with open(sweep.sweep_dir / 'logs' / f'{task.name}.log', 'a', encoding='utf-8') as log:
    log.write(f'$ {handoff.printable(task.command)}\n')


def _start(sweep: SweepRun, task: Task, slot: Slot):
  _write_log_header(sweep, task)
  log = open(sweep.sweep_dir / 'logs' / f'{task.name}.log', 'a', encoding='utf-8')  # pylint: disable=consider-using-with
  process = subprocess.Popen(  # pylint: disable=consider-using-with
      task.command, stdout=log, stderr=subprocess.STDOUT, env=child_env(slot.env),
      start_new_session=True)  # signals reach it only through the sweep
  if slot.cpus:
    # Set while the new interpreter is still starting (single-threaded): every thread it
    # starts later, XLA's pool included, inherits these CPUs (checked in /proc). (No
    # preexec_fn: it is not fork-safe in a process with threads.)
    try:
      os.sched_setaffinity(process.pid, slot.cpus)
    except ProcessLookupError:  # it has already exited; _finish records how
      pass
  for trial in task.trials:
    sweep.status[trial.name].pop('waiting_for', None)
    sweep.record(trial.name, status='running', slot=slot.label, pid=process.pid, log=task.name)
  if task.fused:  # the group's own command; sweep.json has each trial's
    what = f'{task.name} ({", ".join(t.name for t in task.trials)})'
    shown = handoff.printable(task.command)
  else:
    what, shown = task.name, sweep.status[task.name]['command']
  print(f'start {what} on {slot.label}: {shown}', flush=True)
  return task, process, time.perf_counter(), log


def _finish(sweep: SweepRun, task: Task, trial: sweep_lib.Trial, returncode: int,
            seconds: float, slot: str | None = None, early: EarlyStopping | None = None) -> None:
  log_path = sweep.sweep_dir / 'logs' / f'{task.name}.log'
  fields = {'exit_status': returncode, 'seconds': round(seconds, 1), 'pid': None}
  if slot is not None:
    fields['slot'] = slot
  if record.is_finished(sweep.sweep_dir / trial.name, trial.config.train.num_steps):
    results = rundir.load_json(sweep.sweep_dir / trial.name / rundir.RESULTS_FILENAME) or {}
    sweep.record(trial.name, status='done', error=None, **fields)
    print(f'done  {trial.name} in {duration(seconds)}: best val loss '
          f'{results.get("best_val_loss", float("nan")):.4f}', flush=True)
  elif early is not None and early.finish(trial):  # stopped at a rung, or waiting at one
    sweep.record(trial.name, **fields)
  elif returncode in _STOPPED:
    sweep.record(trial.name, status='interrupted', error=None, **fields)
    print(f'stopped {trial.name}; re-run the sweep to continue it from its last checkpoint',
          flush=True)
  else:
    error = record.error_line(log_path, trial.name)
    sweep.record(trial.name, status='failed', error=error, **fields)
    print(f'FAILED {trial.name} (exit status {returncode}): {error}', flush=True)
