"""Successive halving of a sweep's trials (ASHA, Li et al. 2018): rungs, decisions, their log.

`launch.py --sweep --early_stop=500 [--early_stop_eta=3]` judges every trial at
rungs: training steps (500, 1500, 4500, ...: the first rung times eta, eta^2, ...
below train.num_steps; or an explicit list, `--early_stop=500,2000`). At a rung,
a trial's val loss there is compared with those of the other trials that have
reached the same rung so far (a report each), and:

  * with n reports at the rung, a trial continues if it is among the best
    max(1, n // eta) of them (lowest val loss; ties go to the earlier report)
    and stops otherwise: the worst fraction, about 1 - 1/eta, stops;
  * the first trials to arrive, while n < eta, wait at the rung (checkpointed)
    and are judged, by the same rule, once n reaches eta, or once no other
    trial of the sweep can still reach the rung (every other one has reported
    there, has fewer rungs, or was stopped at an earlier rung), or once the
    sweep has nothing else to run (it closes the rung: some trial failed).
    So a trial is never judged alone while another could still come, the best
    trial at a rung never stops and, once two or more have reached a rung, the
    worst one there never continues;
  * a decision is final: a stopped trial stays stopped, a continuing one is not
    judged again at that rung.

Everything is an event in SWEEP_DIR/halving.jsonl, one JSON object a line,
appended and never rewritten: the header (the rungs and eta), `sweep` (the trials
of each run of the sweep and how many rungs each has), `report` (trial, rung,
step, val loss), `decision` (continue or stop, with the rank that decided it)
and `close`. `Ledger` is the decision procedure: a pure function of the events
so far, so replaying a log gives its decisions again, and a resumed sweep
repeats and reverses none. `DecisionLog` is the file: the trial processes (one
trial, or a fused group: `seqlab.sweeps.trial`, `seqlab.sweeps.fused`) report
under an exclusive `flock` on it and learn their decision at once; the sweep's
process (`seqlab.sweeps.runner`) reads it, restarts waiting trials that were
let through, writes `stopped.json` into the run directory of each stopped trial
and closes rungs. No JAX here: the sweep's own process imports this.

A trial process that stops at a rung exits EXIT_STOPPED, one that waits there
EXIT_WAITING, each after its checkpoint at the rung (a fused group's process
exits 0 and drops such trials from its step).
"""

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import pathlib
import time
from typing import Iterable

from seqlab.errors import SeqlabError
from seqlab.run import directory as rundir

LOG_FILENAME = 'halving.jsonl'  # in the sweep directory
STOPPED_FILENAME = 'stopped.json'  # in a stopped trial's run directory
DEFAULT_ETA = 3
EXIT_STOPPED = 20  # a trial's process: stopped at a rung, checkpoint kept
EXIT_WAITING = 21  # a trial's process: waiting at a rung for its decision, checkpoint kept
CONTINUE, STOP = 'continue', 'stop'
_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Rungs:
  """The steps at which trials are judged (rung 1 is the first) and the reduction factor."""
  steps: tuple[int, ...]
  eta: int

  def of(self, num_steps: int) -> list[tuple[int, int]]:
    """(rung number, step) of the rungs of a trial of `num_steps` steps: those before its end."""
    return [(i + 1, s) for i, s in enumerate(self.steps) if s < num_steps]

  def describe(self) -> str:
    return f'rungs at steps {", ".join(map(str, self.steps))}, eta {self.eta}'

  def header(self) -> dict:
    return {'event': 'header', 'version': _VERSION, 'rungs': list(self.steps), 'eta': self.eta}


def parse_rungs(spec: str, eta: int | None, num_steps: int) -> Rungs:
  """`--early_stop` and `--early_stop_eta` as rungs for trials of at most `num_steps` steps.

  One step is the first rung of a geometric ladder (step, step*eta, step*eta^2, ...
  below `num_steps`); several, comma-separated, are the rungs themselves.
  """
  eta = DEFAULT_ETA if eta is None else eta
  if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
    raise SeqlabError(f'--early_stop_eta must be an integer >= 2, got {eta!r}')
  parts = [p.strip() for p in str(spec).split(',') if p.strip()]
  try:
    steps = [int(p) for p in parts]
  except ValueError:
    raise SeqlabError(f'--early_stop={spec!r}: give a step (the first rung of a ladder that '
                      'grows by --early_stop_eta) or steps separated by commas') from None
  if not steps or min(steps) < 1:
    raise SeqlabError(f'--early_stop={spec!r}: rungs are steps >= 1')
  if len(steps) == 1:
    while steps[-1] * eta < num_steps:
      steps.append(steps[-1] * eta)
  elif any(b <= a for a, b in zip(steps, steps[1:])):
    raise SeqlabError(f'--early_stop={spec!r}: the rungs must increase')
  if steps[0] >= num_steps:
    raise SeqlabError(f'--early_stop={spec!r}: no rung before the end of training '
                      f'(train.num_steps={num_steps}); use a smaller first rung')
  return Rungs(tuple(steps), eta)


def check_trials(rungs: Rungs, trials: list) -> None:
  """Raises SeqlabError unless every rung of every trial is one of its eval steps."""
  for trial in trials:
    every = trial.config.eval.every_steps
    for number, step in rungs.of(trial.config.train.num_steps):
      if step % every:
        raise SeqlabError(f'rung {number} (step {step}) is not a multiple of eval.every_steps='
                          f'{every} (trial {trial.name}): a rung compares the val loss measured '
                          'there; choose rungs at eval steps')


def status_text(kind: str, rung: int, step: int) -> str:
  """`stopped at rung 1 (step 500)` / `waiting at rung 1 (step 500)`: a trial's status."""
  return f'{kind} at rung {rung} (step {step})'


@dataclasses.dataclass(frozen=True)
class Report:
  """A trial's val loss at a rung."""
  trial: str
  rung: int
  step: int
  val_loss: float


def _order_key(loss) -> float:
  return math.inf if loss is None or not math.isfinite(loss) else loss


class Ledger:
  """The decisions of one sweep: the events of its log, and the rule that adds to them.

  Pure: `report`, `close` and `start` return the events they add (also kept in
  `new`), which depend only on the events before them.
  """

  def __init__(self, rungs: Rungs, events: Iterable[dict] = ()):
    self.rungs = rungs
    self.new: list[dict] = []
    self._reports: dict[int, list[dict]] = {}  # rung -> its reports, in arrival order
    self._decisions: dict[tuple[str, int], dict] = {}
    self._closed: set[int] = set()
    self._roster: dict[str, int] | None = None  # trial -> its number of rungs
    self._arriving: set[tuple[str, int]] = set()  # reported in the `report` call being made
    for event in events:
      self._apply(event)

  # --- Reading.

  def decision(self, trial: str, rung: int) -> dict | None:
    """The decision event of `trial` at `rung`, if one was made."""
    return self._decisions.get((trial, rung))

  def report_of(self, trial: str, rung: int) -> dict | None:
    return next((r for r in self._reports.get(rung, ()) if r['trial'] == trial), None)

  def outcome(self, trial: str) -> tuple[str, dict] | None:
    """('stopped', its decision) or ('waiting', its report), or None while it may train."""
    for (name, _), decision in sorted(self._decisions.items(), key=lambda kv: kv[0][1]):
      if name == trial and decision['decision'] == STOP:
        return 'stopped', decision
    for rung in sorted(self._reports):
      report = self.report_of(trial, rung)
      if report is not None and (trial, rung) not in self._decisions:
        return 'waiting', report
    return None

  def last_decision(self, trial: str) -> dict | None:
    """The decision of `trial` at the highest rung it was judged at."""
    made = [d for (name, _), d in self._decisions.items() if name == trial]
    return max(made, key=lambda d: d['rung']) if made else None

  def decisions(self) -> list[dict]:
    """Every decision, in the order made."""
    return sorted(self._decisions.values(), key=lambda d: d['order'])

  def waiting(self) -> dict[str, int]:
    """{trial: the rung it waits at}."""
    return {r['trial']: rung for rung, reports in self._reports.items() for r in reports
            if (r['trial'], rung) not in self._decisions}

  # --- Adding.

  def start(self, roster: dict[str, int]) -> list[dict]:
    """A run of the sweep begins with these trials ({name: its number of rungs}); judges
    whoever can now be judged (fewer trials may still come)."""
    added = []
    if roster != self._roster:
      added.append(self._add({'event': 'sweep', 'trials': dict(roster)}))
    return added + self._judge_all()

  def report(self, reports: Iterable[Report]) -> list[dict]:
    """Adds the reports not yet made (a trial reports once per rung) and judges their rungs."""
    added = [self._add({'event': 'report', 'trial': r.trial, 'rung': r.rung, 'step': r.step,
                        'val_loss': r.val_loss})
             for r in reports if self.report_of(r.trial, r.rung) is None]
    self._arriving = {(e['trial'], e['rung']) for e in added}
    try:
      return added + self._judge_all() if added else []
    finally:
      self._arriving = set()

  def close(self, rung: int) -> list[dict]:
    """No more trials will come to `rung` (the sweep has nothing else to run): judges those
    waiting there."""
    if rung in self._closed:
      return []
    return [self._add({'event': 'close', 'rung': rung}), *self._judge_all()]

  # --- The rule.

  def _may_still_come(self, rung: int) -> bool:
    """Whether a trial that has not reported at `rung` may still do so."""
    if self._roster is None:
      return True
    reported = {r['trial'] for r in self._reports.get(rung, ())}
    stopped = {t for (t, n), d in self._decisions.items() if n < rung and d['decision'] == STOP}
    return any(count >= rung and t not in reported and t not in stopped
               for t, count in self._roster.items())

  def _judge_all(self) -> list[dict]:
    """Judges every rung, lowest first: a trial stopped at one rung may be the last that
    trials waiting at a higher one were waiting for."""
    return [d for rung in sorted(self._reports) for d in self._judge(rung)]

  def _judge(self, rung: int) -> list[dict]:
    reports = self._reports.get(rung, [])
    undecided = [r for r in reports if (r['trial'], rung) not in self._decisions]
    n = len(reports)
    if not undecided:
      return []
    if n < self.rungs.eta and rung not in self._closed and self._may_still_come(rung):
      return []  # they wait
    keep = max(1, n // self.rungs.eta)
    order = sorted(range(n), key=lambda i: (_order_key(reports[i]['val_loss']), i))
    rank = {reports[i]['trial']: place + 1 for place, i in enumerate(order)}
    # `waited`: decided after its report, not on arrival (its process left it at the rung).
    return [self._add({'event': 'decision', 'trial': r['trial'], 'rung': rung, 'step': r['step'],
                       'decision': CONTINUE if rank[r['trial']] <= keep else STOP,
                       'rank': rank[r['trial']], 'of': n, 'keep': keep,
                       'val_loss': r['val_loss'],
                       'waited': (r['trial'], rung) not in self._arriving})
            for r in undecided]

  def _add(self, event: dict) -> dict:
    self._apply(event)
    self.new.append(event)
    return event

  def _apply(self, event: dict) -> None:
    kind = event.get('event')
    if kind == 'report':
      self._reports.setdefault(event['rung'], []).append(event)
    elif kind == 'decision':
      self._decisions[(event['trial'], event['rung'])] = dict(event, order=len(self._decisions))
    elif kind == 'close':
      self._closed.add(event['rung'])
    elif kind == 'sweep':
      self._roster = dict(event['trials'])


def describe_decision(decision: dict) -> str:
  """`continues at rung 1 (step 500): val loss 1.2345, ranked 2 of 5 (the best 2 go on)`."""
  what = 'continues' if decision['decision'] == CONTINUE else 'stops'
  return (f'{what} at rung {decision["rung"]} (step {decision["step"]}): val loss '
          f'{decision["val_loss"]:.4f}, ranked {decision["rank"]} of {decision["of"]} (the best '
          f'{decision["keep"]} go on)')


class DecisionLog:
  """SWEEP_DIR/halving.jsonl: the header, then one event a line, only ever appended.

  Readers take a shared `flock`, writers an exclusive one, so the trial processes
  of a sweep (on one machine, or on a shared file system with working locks)
  append in turn. A line cut short by a process killed while writing it is
  ignored, and removed by the next writer.
  """

  def __init__(self, path: pathlib.Path, rungs: Rungs):
    self.path, self.rungs = pathlib.Path(path), rungs

  @classmethod
  def open(cls, path: pathlib.Path) -> 'DecisionLog':
    """The log at `path` (written by a sweep), with the rungs of its header."""
    with _locked(path, fcntl.LOCK_SH) as file:
      events = _events(file.read())
    if not events or events[0].get('event') != 'header':
      raise SeqlabError(f'{path} is not a sweep\'s decision log (no header line)')
    header = events[0]
    return cls(path, Rungs(tuple(header['rungs']), header['eta']))

  @classmethod
  def for_sweep(cls, sweep_dir: pathlib.Path, rungs: Rungs | None) -> 'DecisionLog | None':
    """The sweep's log: created with `rungs`, or the existing one (whose rungs must then
    equal `rungs` if given); None if there is none and no `rungs`."""
    path = pathlib.Path(sweep_dir) / LOG_FILENAME
    if path.exists() and not path.stat().st_size:  # killed while creating it: nothing decided
      path.unlink()
    if not path.exists():
      if rungs is None:
        return None
      with _locked(path, fcntl.LOCK_EX) as file:
        if not file.read():
          file.write(json.dumps(rungs.header()) + '\n')
          file.flush()
          os.fsync(file.fileno())
    log = cls.open(path)
    if rungs is not None and rungs != log.rungs:
      raise SeqlabError(f'{path} records {log.rungs.describe()}, not {rungs.describe()}: a '
                        'sweep keeps its early stopping; give the same --early_stop and '
                        '--early_stop_eta (or none), or use a new --workdir')
    return log

  def read(self) -> Ledger:
    with _locked(self.path, fcntl.LOCK_SH) as file:
      return Ledger(self.rungs, _events(file.read())[1:])

  @contextlib.contextmanager
  def update(self):
    """Yields the ledger under an exclusive lock; appends what was added to it."""
    with _locked(self.path, fcntl.LOCK_EX) as file:
      text = file.read()
      complete = text[:text.rfind('\n') + 1]
      if len(complete) != len(text):  # a line cut short by a killed writer
        file.truncate(len(complete.encode('utf-8')))
      ledger = Ledger(self.rungs, _events(complete)[1:])
      yield ledger
      if ledger.new:
        stamp = round(time.time(), 3)
        file.seek(0, os.SEEK_END)
        file.write(''.join(json.dumps(dict(e, time=stamp)) + '\n' for e in ledger.new))
        file.flush()
        os.fsync(file.fileno())

  def report(self, reports: Iterable[Report]) -> Ledger:
    """Reports val losses at rungs; returns the ledger with their decisions (if made)."""
    with self.update() as ledger:
      ledger.report(list(reports))
    return ledger

  def start(self, roster: dict[str, int]) -> Ledger:
    with self.update() as ledger:
      ledger.start(roster)
    return ledger

  def close(self, rung: int) -> Ledger:
    with self.update() as ledger:
      ledger.close(rung)
    return ledger


@contextlib.contextmanager
def _locked(path: pathlib.Path, how: int):
  with open(path, 'a+' if how == fcntl.LOCK_EX else 'r', encoding='utf-8') as file:
    fcntl.flock(file, how)
    try:
      file.seek(0)
      yield file
    finally:
      fcntl.flock(file, fcntl.LOCK_UN)


def _events(text: str) -> list[dict]:
  """The complete lines of the log (a last line without its newline was cut short)."""
  lines = text.split('\n')[:-1]
  return [json.loads(line) for line in lines if line.strip()]


# --- The run directory of a stopped trial.

def checkpoint_meta(run_dir: pathlib.Path, step: int) -> dict | None:
  """The bookkeeping saved with the run's latest checkpoint at `step` (best and last val
  loss, wall time; `seqlab.run.recorder.fresh_meta`), read without JAX; None if absent."""
  path = pathlib.Path(run_dir) / rundir.CHECKPOINTS / 'latest' / str(step) / 'meta' / 'metadata'
  try:
    return json.loads(path.read_text(encoding='utf-8'))
  except (OSError, ValueError):
    return None


def stopped_record(run_dir: pathlib.Path, decision: dict) -> dict:
  """What stopped.json says of a trial stopped by `decision`: its status, the rung, the
  rank, and its val losses so far (from the checkpoint at the rung)."""
  meta = checkpoint_meta(run_dir, decision['step']) or {}
  loss = decision['val_loss']
  best = meta.get('best_val_loss')
  return {'status': status_text('stopped', decision['rung'], decision['step']),
          'rung': decision['rung'], 'step': decision['step'], 'rank': decision['rank'],
          'of': decision['of'], 'keep': decision['keep'],
          'val_loss': loss, 'val_bpc': loss / math.log(2) if loss is not None else None,
          'best_val_loss': best if best is not None and math.isfinite(best) else None,
          'best_step': meta.get('best_step'), 'steps': decision['step'],
          'wall_time': meta.get('wall_time')}


def read_stopped(run_dir: pathlib.Path) -> dict | None:
  return rundir.load_json(pathlib.Path(run_dir) / STOPPED_FILENAME)
