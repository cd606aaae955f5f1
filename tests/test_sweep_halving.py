"""Successive halving (`--early_stop`, seqlab.sweeps.halving): decisions, their log, and sweeps.

The decision rule runs on planted val-loss curves (fast, nothing trains); the rest are tiny
sweeps in which two trials have a learning rate (1e-6) too small to learn anything in a few
dozen steps, so they are known losers.
"""

import json
import math
import random
import signal
import time

import jax
import numpy as np
import pytest
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import (events, final_params, run_command, scalars, start_command, tiny_config,
                      write_sweep_config)
from seqlab import interrupts
from seqlab import train
from seqlab.analysis import compare
from seqlab.errors import SeqlabError
from seqlab.run import checkpoint
from seqlab.sweeps import declare as sweep
from seqlab.sweeps import fused
from seqlab.sweeps import halving
from seqlab.sweeps import hparams as sweep_hparams
from seqlab.sweeps import record
from seqlab.sweeps import runner

Report = halving.Report


def _decisions(ledger):
  return [(d['trial'], d['rung'], d['decision']) for d in ledger.decisions()]


# --- The rungs.

def test_rungs_are_a_ladder_from_one_step_or_a_list():
  assert halving.parse_rungs('500', None, 6000) == halving.Rungs((500, 1500, 4500), 3)
  assert halving.parse_rungs('100', 2, 800) == halving.Rungs((100, 200, 400), 2)  # 800: the end
  assert halving.parse_rungs('100, 250,1000', 4, 5000) == halving.Rungs((100, 250, 1000), 4)
  rungs = halving.parse_rungs('100,250,1000', None, 5000)
  assert rungs.of(1000) == [(1, 100), (2, 250)]  # a trial's rungs: those before its end
  for spec, eta, message in [('x', 3, 'give a step'), ('0', 3, 'steps >= 1'),
                             ('300,200', 3, 'must increase'), ('500', 3, 'no rung before the end'),
                             ('100', 1, 'integer >= 2')]:
    with pytest.raises(SeqlabError, match=message):
      halving.parse_rungs(spec, eta, 500)


def test_rungs_must_be_eval_steps(tmp_path):
  trials = sweep.make_trials(tiny_config(tmp_path / 'x.txt', **{
      'train.num_steps': 100, 'eval.every_steps': 20}), sweep.axis('seed', [0, 1]))
  halving.check_trials(halving.Rungs((20, 60), 3), trials)
  halving.check_trials(halving.Rungs((20, 100, 130), 3), trials)  # past the end: no rung
  with pytest.raises(SeqlabError, match=r'rung 2 \(step 50\) is not a multiple of '
                                        r'eval.every_steps=20 \(trial seed=0\)'):
    halving.check_trials(halving.Rungs((20, 50), 3), trials)


# --- The rule, on planted curves.

def test_the_first_trials_wait_until_eta_have_reached_the_rung():
  ledger = halving.Ledger(halving.Rungs((10, 30), 3))
  ledger.start({name: 2 for name in 'abcde'})
  ledger.report([Report('a', 1, 10, 2.0)])
  ledger.report([Report('b', 1, 10, 1.0)])
  assert ledger.waiting() == {'a': 1, 'b': 1} and ledger.decisions() == []
  assert ledger.outcome('a')[0] == 'waiting'
  ledger.report([Report('c', 1, 10, 3.0)])  # eta have arrived: all three are judged
  assert _decisions(ledger) == [('a', 1, 'stop'), ('b', 1, 'continue'), ('c', 1, 'stop')]
  # a and b were decided after they reported (they waited), c on arrival.
  assert [d['waited'] for d in ledger.decisions()] == [True, True, False]
  ledger.report([Report('d', 1, 10, 1.5)])  # 4 // 3 = 1: only the best of the 4 continues
  ledger.report([Report('e', 1, 10, 0.5)])  # the best so far: continues
  assert _decisions(ledger)[3:] == [('d', 1, 'stop'), ('e', 1, 'continue')]
  assert ledger.decision('e', 1)['rank'] == 1 and ledger.decision('e', 1)['of'] == 5
  # A decision is final: later, better or worse arrivals do not reverse it, nor does a report
  # made again (a resumed trial).
  assert ledger.report([Report('a', 1, 10, 0.1)]) == []
  assert ledger.outcome('a') == ('stopped', ledger.decision('a', 1))
  assert ledger.outcome('b') is None  # it trains on, to rung 2


def test_a_trial_is_judged_without_eta_when_no_other_can_come():
  ledger = halving.Ledger(halving.Rungs((10, 30), 3))
  ledger.start({'a': 2, 'b': 2, 'c': 1})  # c has one rung only (it is shorter)
  ledger.report([Report('a', 1, 10, 2.0), Report('b', 1, 10, 1.0)])
  assert ledger.decisions() == []  # c may still come
  ledger.report([Report('c', 1, 10, 9.0)])
  assert _decisions(ledger) == [('a', 1, 'stop'), ('b', 1, 'continue'), ('c', 1, 'stop')]
  ledger.report([Report('b', 2, 30, 0.9)])  # alone at rung 2, and nobody else can reach it
  assert ledger.decision('b', 2)['decision'] == halving.CONTINUE
  # A stop at a lower rung can be what trials waiting at a higher one wait for.
  ledger = halving.Ledger(halving.Rungs((10, 30), 2))
  ledger.start({'a': 2, 'b': 2, 'c': 2})
  ledger.report([Report('a', 1, 10, 1.0), Report('b', 1, 10, 2.0)])
  ledger.report([Report('a', 2, 30, 0.5)])
  assert ledger.waiting() == {'a': 2}  # c may still come to rung 2 through rung 1
  ledger.report([Report('c', 1, 10, 3.0)])
  assert _decisions(ledger)[-2:] == [('c', 1, 'stop'), ('a', 2, 'continue')]


def test_a_closed_rung_judges_those_waiting_there():
  ledger = halving.Ledger(halving.Rungs((10,), 3))
  ledger.start({'a': 1, 'b': 1, 'c': 1})
  ledger.report([Report('a', 1, 10, 2.0), Report('b', 1, 10, float('nan'))])
  assert ledger.waiting() == {'a': 1, 'b': 1}
  ledger.close(1)  # c failed: the sweep has nothing else to run
  assert _decisions(ledger) == [('a', 1, 'continue'), ('b', 1, 'stop')]  # NaN ranks last
  ledger.report([Report('c', 1, 10, 1.0)])  # c re-run later: judged at once, not waiting
  assert ledger.decision('c', 1)['decision'] == halving.CONTINUE


CURVES = {  # val loss at rungs 1, 2, 3: some cross; `best` is lowest at every rung
    'best': [2.0, 1.5, 1.2], 'worst': [3.3, 3.2, 3.1], 'late': [2.6, 1.6, 1.25],
    'fast': [2.1, 1.9, 1.8], 'flat': [2.5, 2.4, 2.3], 'a': [2.2, 1.7, 1.4], 'b': [2.3, 2.0, 1.9],
    'c': [2.9, 2.8, 2.0], 'd': [2.4, 2.1, 1.3]}
RUNGS = halving.Rungs((100, 300, 900), 3)


def _simulate(rng: random.Random, workers: int, ledger: halving.Ledger):
  """An asynchronous sweep of CURVES on `workers` slots: trials start in a random order,
  advance one rung at a time in a random interleaving, leave their slot when they wait at a
  rung, start again first when let through, and the sweep closes the lowest rung that trials
  wait at when it has nothing else to run (as runner.EarlyStopping does)."""
  queue = list(CURVES)
  rng.shuffle(queue)
  ledger.start({t: len(RUNGS.steps) for t in CURVES})
  running, held, reached, finished = [], set(), {t: 0 for t in CURVES}, set()
  while queue or running or held:
    while queue and len(running) < workers:
      running.append(queue.pop(0))
    if running:
      trial = rng.choice(running)
      rung = reached[trial] + 1
      if rung > len(RUNGS.steps):
        running.remove(trial)
        finished.add(trial)
      else:
        reached[trial] = rung
        ledger.report([Report(trial, rung, RUNGS.steps[rung - 1], CURVES[trial][rung - 1])])
        decided = ledger.decision(trial, rung)
        if decided is None or decided['decision'] == halving.STOP:
          running.remove(trial)
          if decided is None:
            held.add(trial)
    elif held:
      ledger.close(min(ledger.waiting()[t] for t in held))
    for trial in sorted(held):
      decided = ledger.decision(trial, reached[trial])
      if decided is not None:
        held.remove(trial)
        if decided['decision'] == halving.CONTINUE:
          queue.insert(0, trial)
  return finished


@pytest.mark.parametrize('workers', [1, 3, 9])
def test_the_worst_at_a_rung_stops_and_the_best_never_does(workers):
  for seed in range(30):
    ledger = halving.Ledger(RUNGS)
    finished = _simulate(random.Random(seed), workers, ledger)
    assert 'best' in finished and 'worst' not in finished
    assert ledger.waiting() == {}
    decided = ledger.decisions()
    assert len({(d['trial'], d['rung']) for d in decided}) == len(decided)  # once each
    for rung in (1, 2, 3):
      at = {d['trial']: d for d in decided if d['rung'] == rung}
      assert at, (seed, rung)
      lowest = min(at, key=lambda t: CURVES[t][rung - 1])
      highest = max(at, key=lambda t: CURVES[t][rung - 1])
      assert at[lowest]['decision'] == halving.CONTINUE, (seed, rung)
      if len(at) > 1:
        assert at[highest]['decision'] == halving.STOP, (seed, rung)
    assert ledger.decision('worst', 1)['decision'] == halving.STOP


def test_replaying_the_log_gives_the_same_decisions(tmp_path):
  ledger = halving.Ledger(RUNGS)
  _simulate(random.Random(7), 3, ledger)
  replayed = halving.Ledger(RUNGS, ledger.new)
  assert _decisions(replayed) == _decisions(ledger)
  assert [replayed.outcome(t) for t in CURVES] == [ledger.outcome(t) for t in CURVES]
  # The same reports in the same order make the same events; on disk as in memory.
  log = halving.DecisionLog.for_sweep(tmp_path, RUNGS)
  again = halving.Ledger(RUNGS)
  for event in ledger.new:
    if event['event'] == 'sweep':
      assert again.start(event['trials']) == log.start(event['trials']).new
    elif event['event'] == 'report':
      report = Report(event['trial'], event['rung'], event['step'], event['val_loss'])
      made = again.report([report])
      assert made == log.report([report]).new
    elif event['event'] == 'close':
      assert again.close(event['rung']) == log.close(event['rung']).new
  assert again.new == ledger.new
  assert _decisions(log.read()) == _decisions(ledger)
  lines = (tmp_path / halving.LOG_FILENAME).read_text().splitlines()
  assert json.loads(lines[0]) == {'event': 'header', 'version': 1, 'rungs': [100, 300, 900],
                                  'eta': 3}
  assert [{k: v for k, v in json.loads(l).items() if k != 'time'} for l in lines[1:]] == \
      ledger.new


def test_a_resumed_decision_process_repeats_and_reverses_nothing(tmp_path):
  """A sweep killed half way (a line cut short by the kill), then run again: its trials
  report again what they had reported, and go on."""
  reference = halving.Ledger(RUNGS)
  _simulate(random.Random(3), 2, reference)
  reports = [e for e in reference.new if e['event'] == 'report']
  log = halving.DecisionLog.for_sweep(tmp_path, RUNGS)
  log.start({t: 3 for t in CURVES})
  first = reports[:len(reports) // 2]
  for e in first:
    log.report([Report(e['trial'], e['rung'], e['step'], e['val_loss'])])
  before = log.read()
  assert before.decisions()
  path = tmp_path / halving.LOG_FILENAME
  with open(path, 'a', encoding='utf-8') as f:
    f.write('{"event": "decision", "trial": "worst", "ru')  # killed while writing
  assert _decisions(log.read()) == _decisions(before)

  resumed = halving.DecisionLog.for_sweep(tmp_path, None)  # the re-run: rungs from the log
  assert resumed.rungs == RUNGS
  with pytest.raises(SeqlabError, match='a sweep keeps its early stopping'):
    halving.DecisionLog.for_sweep(tmp_path, halving.Rungs((100, 300), 3))
  resumed.start({t: 3 for t in CURVES})
  for e in reports:  # again from the start, with the losses a resumed trial reads back
    resumed.report([Report(e['trial'], e['rung'], e['step'], e['val_loss'])])
  after = resumed.read()
  assert _decisions(after)[:len(before.decisions())] == _decisions(before)  # none reversed
  events_written = [json.loads(l) for l in path.read_text().splitlines()]  # the cut line: gone
  decided = [(e['trial'], e['rung']) for e in events_written if e['event'] == 'decision']
  assert len(decided) == len(set(decided))  # none repeated
  assert _decisions(after) == _decisions(reference)


def test_the_sweep_holds_waiting_trials_and_starts_them_when_let_through(tmp_path):
  """runner.EarlyStopping on a log that trials write (by hand here: nothing trains)."""
  trials = sweep.make_trials(tiny_config(tmp_path / 'x.txt', **{
      'train.num_steps': 30, 'eval.every_steps': 10}), sweep.axis('seed', [0, 1, 2, 3]))
  names = [t.name for t in trials]
  for name in names:
    (tmp_path / name).mkdir()
  state = record.SweepRun(tmp_path, trials, {n: 'command' for n in names})
  log = halving.DecisionLog.for_sweep(tmp_path, halving.Rungs((10, 20), 2))
  early = runner.EarlyStopping(state, log)
  assert early.begin(trials) == trials
  log.report([Report('seed=0', 1, 10, 2.0)])  # the first at rung 1: waits; its process ends
  assert early.finish(trials[0]) and early.released(idle=False) == []
  assert state.status['seed=0']['status'] == 'waiting at rung 1 (step 10)'
  log.report([Report('seed=1', 1, 10, 3.0)])  # lets seed=0 through, stops itself
  assert early.finish(trials[1])
  assert state.status['seed=1']['status'] == 'stopped at rung 1 (step 10)'
  assert json.loads((tmp_path / 'seed=1' / halving.STOPPED_FILENAME).read_text())['rank'] == 2
  assert early.released(idle=False) == [trials[0]]  # started again, first
  assert state.status['seed=0']['status'] == 'pending'
  # seed=0 waits at rung 2 (seed=2 and 3 may still come); seed=2 and 3 stop at rung 1, which
  # lets seed=0 through before the sweep has seen its process end: it is started again all
  # the same, once.
  log.report([Report('seed=0', 2, 20, 1.0)])
  log.report([Report('seed=2', 1, 10, 4.0)])
  log.report([Report('seed=3', 1, 10, 5.0)])
  assert log.read().decision('seed=0', 2)['decision'] == halving.CONTINUE
  assert early.finish(trials[0]) and early.released(idle=False) == [trials[0]]
  assert not early.finish(trials[0])  # it ended again, for another reason: not held again
  # A trial left waiting when nothing else can run: the sweep closes its rung.
  (tmp_path / 'b').mkdir()
  log2 = halving.DecisionLog.for_sweep(tmp_path / 'b', halving.Rungs((10,), 3))
  early = runner.EarlyStopping(record.SweepRun(tmp_path / 'b', trials, {n: '' for n in names}),
                               log2)
  early.begin(trials)
  log2.report([Report('seed=0', 1, 10, 2.0)])
  assert early.finish(trials[0]) and early.released(idle=False) == []
  assert early.released(idle=True) == [trials[0]]  # closed: the best of 1 goes on
  assert [e['event'] for e in map(json.loads, (tmp_path / 'b' / halving.LOG_FILENAME).read_text(
      ).splitlines())][-2:] == ['close', 'decision']


# --- What a stopped trial looks like, without training.

def test_a_stopped_trial_in_compare_and_hparams(tmp_path):
  run = tmp_path / 'sweep' / 'seed=1'
  run.mkdir(parents=True)
  (run / 'config.json').write_text(json.dumps(json.loads(
      tiny_config(tmp_path / 'x.txt').to_json_best_effort())))
  decision = {'trial': 'seed=1', 'rung': 1, 'step': 10, 'decision': 'stop', 'rank': 2, 'of': 2,
              'keep': 1, 'val_loss': 3.25}
  stopped = halving.stopped_record(run, decision)
  assert stopped['status'] == 'stopped at rung 1 (step 10)' and stopped['steps'] == 10
  assert stopped['val_bpc'] == pytest.approx(3.25 / math.log(2))
  (run / halving.STOPPED_FILENAME).write_text(json.dumps(stopped))
  sweep_hparams.write_stopped_session(run, stopped)
  columns, rows = compare.table_rows(run)  # no sweep.json: the status from stopped.json
  assert rows[0]['status'] == 'stopped at rung 1 (step 10)' and rows[0]['val_loss'] == 3.25
  content = events(run).PluginTagToContent('hparams')
  start = plugin_data_pb2.HParamsPluginData.FromString(content['_hparams_/session_start_info'])
  assert start.session_start_info.hparams['status'].string_value == stopped['status']
  assert scalars(run, 'final/val_loss') == [(10, pytest.approx(3.25))]


def test_a_bad_rung_is_one_error_line_before_anything_runs(tmp_path, text_file):
  config = write_sweep_config(tmp_path, text_file, "sweep.axis('seed', [0, 1])")
  done = run_command('--config', config, '--sweep', '--workdir', tmp_path / 'sweep',
                     '--early_stop=4', timeout=120)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1] == (
      'error: rung 1 (step 4) is not a multiple of eval.every_steps=6 (trial seed=0): a rung '
      'compares the val loss measured there; choose rungs at eval steps')
  assert not (tmp_path / 'sweep').exists()


# --- Sweeps.

# 30 steps, evaluated and checkpointed every 10: rungs at 10 and 20 with eta 2.
SHORT = ['--config.train.num_steps=30', '--config.eval.every_steps=10',
         '--config.log.checkpoint_every_steps=10', '--early_stop=10', '--early_stop_eta=2']
GRID = "sweep.product(sweep.axis('optim.learning_rate', [2e-2, 1e-6]), sweep.axis('seed', [0, 1]))"
GOOD = ['learning_rate=0.02,seed=0', 'learning_rate=0.02,seed=1']
BAD = ['learning_rate=1e-06,seed=0', 'learning_rate=1e-06,seed=1']


def _log_decisions(sweep_dir):
  lines = (sweep_dir / halving.LOG_FILENAME).read_text().splitlines()
  return [(e['trial'], e['rung'], e['decision']) for e in map(json.loads, lines)
          if e['event'] == 'decision']


def _check_outcome(sweep_dir, status):
  """The bad learning rates stopped at rung 1 with their checkpoint; a good one finished."""
  for name in BAD:
    assert status[name]['status'] == 'stopped at rung 1 (step 10)', status[name]
    assert status[name]['rung'] == 1 and status[name]['rung_step'] == 10
    assert checkpoint.latest_step_on_disk(sweep_dir / name) == 10
    assert not (sweep_dir / name / 'results.json').exists()
    stopped = json.loads((sweep_dir / name / halving.STOPPED_FILENAME).read_text())
    assert stopped['status'] == 'stopped at rung 1 (step 10)'
    assert stopped['val_loss'] == pytest.approx(scalars(sweep_dir / name, 'val/loss')[-1][1])
  done = [n for n in GOOD if status[n]['status'] == 'done']
  assert done, status
  for name in done:
    assert json.loads((sweep_dir / name / 'results.json').read_text())['steps'] == 30
  assert {s['status'] for s in status.values()} <= {
      'done', 'stopped at rung 1 (step 10)', 'stopped at rung 2 (step 20)'}
  decided = _log_decisions(sweep_dir)
  assert len({(t, r) for t, r, _ in decided}) == len(decided)  # each decision made once


@pytest.mark.slow
def test_a_parallel_sweep_stops_its_losers_at_the_first_rung(text_file, tmp_path):
  config = write_sweep_config(tmp_path, text_file, GRID)
  sweep_dir = tmp_path / 'sweep'
  args = ['--config', config, '--sweep', '--workdir', sweep_dir, '--parallel', '2', *SHORT]
  result = run_command(*args, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  status = json.loads((sweep_dir / 'sweep.json').read_text())['trials']
  _check_outcome(sweep_dir, status)
  for name in BAD:  # each judged itself on arrival: 2 good trials had reported before
    assert status[name]['exit_status'] == halving.EXIT_STOPPED
    assert f'{name} stops at rung 1 (step 10)' in (sweep_dir / 'logs' / f'{name}.log').read_text()
  assert '| learning_rate=1e-06,seed=0 | stopped at rung 1 (step 10) |' in result.stdout
  # compare and TensorBoard's HParams say so too.
  rows = {r['trial']: r for r in compare.table_rows(sweep_dir)[1]}
  assert all(rows[n]['status'] == 'stopped at rung 1 (step 10)' for n in BAD)
  assert rows[BAD[0]]['best_val_loss'] > max(rows[n]['best_val_loss'] for n in GOOD)
  experiment = plugin_data_pb2.HParamsPluginData.FromString(
      events(sweep_dir).PluginTagToContent('hparams')['_hparams_/experiment']).experiment
  assert experiment.hparam_infos[0].name == 'status'
  session = plugin_data_pb2.HParamsPluginData.FromString(events(sweep_dir / BAD[1]).PluginTagToContent(
      'hparams')['_hparams_/session_start_info']).session_start_info
  assert session.hparams['status'].string_value == 'stopped at rung 1 (step 10)'

  # Running it again changes nothing: no trial runs, no decision is added.
  files = sorted(p for p in sweep_dir.rglob('*') if p.is_file() and 'logs' not in p.parts
                 and p.name not in ('sweep.json', '.lock') and 'sweep-hparams' not in p.name)
  before = {p: p.read_bytes() for p in files}
  again = run_command(*args, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert '3 stopped early' in again.stdout or '2 stopped early' in again.stdout
  assert ', 0 to run' in again.stdout
  assert {p: p.read_bytes() for p in files} == before
  assert {n: s['status'] for n, s in json.loads(
      (sweep_dir / 'sweep.json').read_text())['trials'].items()} == {
          n: s['status'] for n, s in status.items()}


@pytest.mark.slow
def test_a_fused_group_shrinks_and_its_survivors_train_as_alone(text_file, tmp_path, capsys):
  base = tiny_config(text_file, **{'train.num_steps': 16, 'eval.every_steps': 8,
                                   'log.every_steps': 1, 'log.checkpoint_every_steps': 8,
                                   'log.novelty_num_samples': 0, 'log.sample_steps': (8,)})
  trials = sweep.make_trials(base, sweep.zipped(
      sweep.axis('optim.learning_rate', [2e-2, 1e-6, 1e-2, 2e-6]),
      sweep.axis('model.dropout', [0.0, 0.0, 0.3, 0.0]), sweep.axis('seed', [0, 1, 2, 3])))
  good, bad = [trials[0], trials[2]], [trials[1], trials[3]]
  log = halving.DecisionLog.for_sweep(tmp_path, halving.parse_rungs('8', 2, 16))
  assert log.rungs.steps == (8,)
  errors = fused.train_fused([(t, tmp_path / 'fused' / t.name) for t in trials],
                             interrupts.StopRequest(), log)
  assert errors == {}
  assert 'fused: 2 of 4 trials continue after rung 1 (step 8)' in capsys.readouterr().out
  assert sorted(_log_decisions(tmp_path)) == sorted(
      [(t.name, 1, 'continue') for t in good] + [(t.name, 1, 'stop') for t in bad])
  for trial in bad:  # stopped at the rung, with their checkpoint there
    run = tmp_path / 'fused' / trial.name
    assert checkpoint.latest_step_on_disk(run) == 8 and not (run / 'results.json').exists()
    assert [s for s, _ in scalars(run, 'train/loss')] == list(range(1, 9))
  for trial in good:  # the survivors, trained on in a step for 2: as if trained alone
    alone = train.train_and_evaluate(trial.config, tmp_path / 'alone' / trial.name)
    together = tmp_path / 'fused' / trial.name
    results = json.loads((together / 'results.json').read_text())
    for key in ('val_loss', 'best_val_loss', 'test_loss'):
      if key in alone:
        assert results[key] == pytest.approx(alone[key], rel=2e-5), (trial.name, key)
    fused_losses = scalars(together, 'train/loss')
    assert [s for s, _ in fused_losses] == list(range(1, 17))
    np.testing.assert_allclose([v for _, v in fused_losses],
                               [v for _, v in scalars(tmp_path / 'alone' / trial.name,
                                                      'train/loss')], rtol=2e-5)
    # Parameters near 0 differ by up to ~2e-6 between fused and alone whether or not the
    # group shrank (a group of these 4 without early stopping ends bit for bit as this one).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 final_params(together), final_params(tmp_path / 'alone' / trial.name))


def _wait_for_decision(sweep_dir, process, timeout=300):
  deadline = time.time() + timeout
  path = sweep_dir / halving.LOG_FILENAME
  while time.time() < deadline and process.poll() is None:
    if path.exists() and '"event": "decision"' in path.read_text():
      return
    time.sleep(0.1)
  pytest.fail('no decision before the sweep ended')


@pytest.mark.slow
@pytest.mark.parametrize('fused_flag', [False, True], ids=['separate', 'fused'])
def test_a_halving_sweep_resumed_after_sigterm_repeats_no_decision(text_file, tmp_path,
                                                                   fused_flag):
  config = write_sweep_config(tmp_path, text_file, GRID)
  sweep_dir = tmp_path / 'sweep'
  longer = ['--config.train.num_steps=300', '--config.eval.every_steps=10',
            '--config.log.checkpoint_every_steps=10', '--early_stop=10,20', '--early_stop_eta=2']
  args = ['--config', config, '--sweep', '--workdir', sweep_dir, '--parallel', '2', *longer,
          *(['--fused'] if fused_flag else [])]
  process = start_command(*args)
  _wait_for_decision(sweep_dir, process)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 143, stderr[-3000:]
  before = _log_decisions(sweep_dir)
  status = json.loads((sweep_dir / 'sweep.json').read_text())['trials']
  assert 'failed' not in {s['status'] for s in status.values()}

  again = run_command(*args, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  after = _log_decisions(sweep_dir)
  assert after[:len(before)] == before  # kept, in order: none reversed
  assert len({(t, r) for t, r, _ in after}) == len(after)  # none repeated
  status = json.loads((sweep_dir / 'sweep.json').read_text())['trials']
  assert set(status) == set(GOOD + BAD)  # none lost: each done, or stopped at a rung
  for name, s in status.items():
    if s['status'] == 'done':
      assert json.loads((sweep_dir / name / 'results.json').read_text())['steps'] == 300
    else:
      assert s['status'].startswith('stopped at rung '), (name, s)
      assert (sweep_dir / name / halving.STOPPED_FILENAME).exists()
  assert all(status[n]['status'] == 'stopped at rung 1 (step 10)' for n in BAD)
