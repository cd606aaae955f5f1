"""experiments/zoo/ (study.py, entries.py, report.py), the equal-compute study's tooling: its
entries, the commands it builds, and its table from hand-made run directories. Nothing trains
here (the tooling's end-to-end check is `study.py ... --smoke`, see experiments/zoo/README.md)."""

import json
import os
import pathlib

import pytest

from conftest import run_command
from configs import shakespeare
from configs import zoo
from experiments.zoo import budgets
from experiments.zoo import entries
from experiments.zoo import processes
from experiments.zoo import report
from experiments.zoo import study
from experiments.zoo import training


def test_the_entries_are_the_issues():
  names = [e.name for e in entries.ENTRIES]
  assert len(names) == len(set(names)) == 19
  assert [e.seed for e in entries.ENTRIES if e.key == 'lstm-0.8M'] == [0, 1, 2]  # noise floor
  for model in entries.MODELS:
    assert [e.seed for e in entries.ENTRIES if e.key == f'{model}-5M'] == [0]
    if model != 'lstm':
      assert [e.seed for e in entries.ENTRIES if e.key == f'{model}-0.8M'] == [0, 1]
  assert [e.name for e in entries.select('gpt')] == ['gpt-0.8M-s0', 'gpt-0.8M-s1', 'gpt-5M-s0']
  assert [e.name for e in entries.select('mamba-5M,lstm-0.8M-s2')] == ['lstm-0.8M-s2',
                                                                     'mamba-5M-s0']
  with pytest.raises(SystemExit, match='no such entry'):
    entries.select('rwkv')


def test_a_5m_entry_overrides_the_0_8m_variant_as_the_bench_sizes_it():
  assert entries.size_overrides('mingru', '0.8M') == {}
  assert entries.size_overrides('lstm', '5M') == {'model.num_layers': 3, 'model.hidden_size': 512}
  assert entries.size_overrides('gpt', '5M') == {'model.num_layers': 6, 'model.width': 256}
  assert entries.size_overrides('gpt', '5M', smoke=True) == {}
  entry = entries.Entry('hawk', '5M', 0)
  hparams = {'hawk': {'overrides': {'optim.learning_rate': 0.004, 'model.dropout': 0.1}}}
  command = entries.launch_command(entry.config(), '/tmp/w', entries.run_overrides(
      entry, 2000, hparams, smoke=False))
  assert command[1:6] == ['launch.py', '--config', 'configs/zoo.py:hawk', '--workdir', '/tmp/w']
  assert command[6:] == [
      '--config.model.num_layers=4', '--config.model.width=296', '--config.eval.window=256',
      '--config.optim.learning_rate=0.004', '--config.model.dropout=0.1', '--config.seed=0',
      '--config.train.num_steps=2000',
      '--config.eval.every_steps=200', '--config.log.checkpoint_every_steps=200']
  gpt = entries.run_overrides(entries.Entry('gpt', '0.8M', 1), 2000, {}, smoke=False)
  assert (gpt['model.context'], gpt['data.seq_len'], gpt['data.batch_size']) == (256, 256, 8)
  assert gpt['eval.window'] == 256


def test_the_sweep_is_the_variants_learning_rate_times_factors_by_dropout():
  from experiments.zoo import sweep_config
  trials = sweep_config.get_sweep('mamba')  # never widened: its best was inside
  assert len(trials) == 6
  assert sorted({t['optim.learning_rate'] for t in trials}) == [0.001, 0.002, 0.004]
  assert sorted({t['model.dropout'] for t in trials}) == [0.0, 0.1]
  gpt = sweep_config.get_sweep('gpt')  # widened twice: x4, then x8
  assert sorted({t['optim.learning_rate'] for t in gpt}) == [0.0005, 0.001, 0.002, 0.004, 0.008]
  # The LSTM's best was at x2: widened by x4 (the finished trials keep their directories).
  lstm = sweep_config.get_sweep('lstm')
  assert sorted({t['optim.learning_rate'] for t in lstm}) == [0.0025, 0.005, 0.01, 0.02]
  assert len(lstm) == 8 and len(sweep_config.get_sweep('lstm,smoke')) == 8
  assert sweep_config.get_config('gpt,smoke').model.name == 'gpt'


def _finished(runs_dir, name, stream, windows, best_step=900):
  (runs_dir / name).mkdir(parents=True)
  (runs_dir / name / 'results.json').write_text(json.dumps({
      'steps': 1000, 'best_step': best_step, 'num_params': 800_000, 'flops_per_char': 4_800_000,
      'chars_per_sec': 2048.0, 'train_time': 900.0, 'eval_protocol': 'stream',
      'val_loss_stream': stream, 'val_loss_windows': windows}))


def test_the_table_has_mean_and_spread_over_seeds_and_the_noise_floor(tmp_path):
  for seed, loss in enumerate((1.50, 1.52, 1.54)):
    _finished(tmp_path, f'lstm-0.8M-s{seed}', loss, loss + 0.1)
  _finished(tmp_path, 'mingru-0.8M-s0', 1.52, 1.58)
  _finished(tmp_path, 'mingru-0.8M-s1', 1.56, 1.62)
  _finished(tmp_path, 'gpt-0.8M-s0', 1.70, 1.70)
  rows = {r['key']: r for r in report.table_rows(tmp_path)}
  assert rows['lstm-0.8M']['val_stream'] == pytest.approx(1.52)
  assert rows['lstm-0.8M']['val_stream_sd'] == pytest.approx(0.02)
  assert rows['lstm-0.8M']['seeds'] == '3/3' and rows['gpt-0.8M']['seeds'] == '1/2'
  assert rows['gpt-0.8M']['val_stream_sd'] is None and rows['hawk-0.8M']['n'] == 0
  floor = report.noise_floor(list(rows.values()))
  assert floor['stream'] == pytest.approx(0.02) and floor['n'] == 3
  lines = {line.split(' | ')[0][2:] + '-' + line.split(' | ')[1]: line
           for line in report.markdown_table(list(rows.values()), floor).splitlines()[2:]}
  # A verdict per protocol, each against its own best and noise floor (2 sd = 0.04).
  assert lines['lstm-0.8M'].endswith(
      '| 1.5200 ± 0.0200 | 1.6200 ± 0.0200 | 900, 900, 900 | 3/3 | best | +0.0200: tie |')
  assert lines['mingru-0.8M'].endswith('| +0.0200: tie | best |')
  assert lines['gpt-0.8M'].endswith('| 1.7000 (1 seed) | 900 | 1/2 | +0.1800 | +0.1000 |')
  assert lines['hawk-0.8M'].endswith('| - | - | - | 0/2 | - | - |')


def test_the_study_imports_no_jax():
  done = run_command(code='import sys; import experiments.zoo.study; '
                          'print([m for m in ("jax", "flax") if m in sys.modules])')
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip().splitlines()[-1] == '[]'


def test_the_pictures_come_from_compare_with_a_colour_per_model(tmp_path):
  import tensorboardX  # pylint: disable=g-import-not-at-top
  from configs import shakespeare  # pylint: disable=g-import-not-at-top
  runs = []
  for name in ('lstm-0.8M-s0', 'gpt-5M-s0', 'gpt-0.8M-s0'):
    _finished(tmp_path / 'runs', name, 1.5, 1.6)
    run = tmp_path / 'runs' / name
    (run / 'config.json').write_text(shakespeare.get_config('smoke').to_json_best_effort())
    with tensorboardX.SummaryWriter(str(run)) as writer:
      for step in (10, 20):
        writer.add_scalar('val/loss', 2.0 / step, step)
        writer.add_scalar('val/loss_windows', 2.5 / step, step)
        if name != 'gpt-0.8M-s0':  # as a run made before the tag existed
          writer.add_scalar('val/train_seconds', 3.0 * step, step)
          writer.add_scalar('val/train_flops', 1e6 * step, step)
    if name != 'gpt-0.8M-s0':  # `run`'s record of the entry's budget (the study's clock)
      run.with_name(f'{name}.json').write_text(json.dumps({'seconds_per_step': 0.3, 'steps': 20}))
    runs.append(run)
  assert report.line_styles(runs) == {
      'lstm-0.8M-s0': {'color': 'C0', 'linestyle': '-'},
      'gpt-5M-s0': {'color': 'C5', 'linestyle': '--'},
      'gpt-0.8M-s0': {'color': 'C5', 'linestyle': '-'}}
  lines = report.pictures(runs, tmp_path / 'out', window=256)
  assert '![val loss (stream) against training minutes](compare_val_loss_time.png)' in lines
  assert '![val loss (windows) against training FLOPs](compare_val_loss_flops_windows.png)' \
      in lines
  assert 'Not in the picture against training FLOPs (no val/train_flops): gpt-0.8M-s0.' in lines
  assert ('Not in the picture against training minutes (no seconds per step recorded by `run`): '
          'gpt-0.8M-s0.') in lines
  for name in ('compare.csv', 'compare_val_loss_time.png', 'compare_val_loss_flops.png',
               'compare_val_loss_time_windows.png', 'compare_val_loss_flops_windows.png'):
    assert (tmp_path / 'out' / name).exists()
  windows, _ = report.run_curves.axis_curves(runs, 'time', report.WINDOWS_TAG)
  assert windows['lstm-0.8M-s0'] == [(0.5, pytest.approx(0.25)), (1.0, pytest.approx(0.125))]
  # The pictures' minutes are the budget's (20 steps at 0.3 s end at 0.1 min), not the runs'
  # own train_seconds (1.0 min at step 20), which drift with the machine.
  budgeted, missing = report.budget_clock_curves(runs, report.WINDOWS_TAG)
  assert budgeted['gpt-5M-s0'] == [(pytest.approx(0.05), pytest.approx(0.25)),
                                   (pytest.approx(0.1), pytest.approx(0.125))]
  assert missing == ['gpt-0.8M-s0']
  assert not (tmp_path / 'out' / 'compare_by_position.png').exists()  # no run has the data


def test_the_pictures_stop_half_a_nat_above_the_best_final_loss(tmp_path, monkeypatch):
  drawn = []
  monkeypatch.setattr(report.run_curves, 'plot_curves',
                      lambda path, curves, *args, y_top=None, **kw: drawn.append(y_top))
  curves = {'lstm-0.8M-s0': [(1, 2.0), (2, 1.5)], 'lstm-5M-s0': [(1, 3.4), (2, 3.0)],
            'gpt-5M-s0': [(1, 2.5), (2, 1.9)]}
  assert report.picture_top(curves) == (pytest.approx(2.0), ['lstm-5M-s0'])
  assert report.picture_top({'lstm-0.8M-s0': []}) == (None, [])  # matplotlib's own range
  monkeypatch.setattr(report, 'budget_clock_curves', lambda runs, tag: (curves, []))
  monkeypatch.setattr(report.run_curves, 'axis_curves', lambda runs, x, tag: (curves, []))
  monkeypatch.setattr(report.compare, 'table_rows', lambda runs: ([], []))
  monkeypatch.setattr(report.compare, 'write_csv', lambda *args: None)
  runs = [tmp_path / name for name in curves]
  for run in runs:
    run.mkdir()
    (run / 'config.json').write_text('{}')
  lines = report.pictures(runs, tmp_path / 'out', window=256)
  assert drawn == [pytest.approx(2.0)] * 4
  assert lines.count('Above the top of that picture (its best final loss + 0.5, 2.00) at the '
                     'end: lstm-5M-s0.') == 4


def test_busy_cores_sees_a_spinning_thread_that_the_load_average_would_remember():
  import threading  # pylint: disable=g-import-not-at-top
  stop = threading.Event()

  def spin():
    while not stop.is_set():
      pass

  thread = threading.Thread(target=spin)
  thread.start()
  try:
    busy = processes.busy_cores(1.0)
  finally:
    stop.set()
    thread.join()
  assert busy is not None and 0.7 <= busy <= (__import__('os').cpu_count() or 1) + 0.01
  assert processes.quiet_note(busy).startswith(f'note: {busy:.2f} cores busy')
  assert processes.quiet_note(0.05) is None


def test_run_starts_an_entry_anew_where_its_checkpoints_were_not_kept(tmp_path, monkeypatch):
  """A run started on another machine or session is kept without checkpoints: its events and
  samples would mix with a new run's, so `run` empties its directory first; a finished one is
  skipped."""
  budget = tmp_path / 'budget.json'
  budget.write_text(json.dumps({'budget_seconds': 900, 'smoke': False, 'entries': {
      'hawk-0.8M': {'seconds_per_step': 0.5, 'steps': 1800}}}))
  runs_dir = tmp_path / 'runs'
  stale = runs_dir / 'hawk-0.8M-s0'
  stale.mkdir(parents=True)
  (stale / 'events.out.tfevents.1.old').write_text('a partial run')
  _finished(runs_dir, 'hawk-0.8M-s1', 1.5, 1.6)
  results = json.loads((runs_dir / 'hawk-0.8M-s1' / 'results.json').read_text())
  (runs_dir / 'hawk-0.8M-s1' / 'results.json').write_text(json.dumps({**results, 'steps': 1800}))
  launched = []

  def fake_run_logged(command, log):
    workdir = command[command.index('--workdir') + 1]
    launched.append((workdir, sorted(p.name for p in stale.glob('*')) if stale.exists() else None))
    return 0

  monkeypatch.setattr(processes, 'run_logged', fake_run_logged)
  assert study.main(['run', '--only', 'hawk-0.8M', '--budget_file', str(budget),
                     '--hparams_file', str(tmp_path / 'none.json'), '--unswept',
                     '--runs_dir', str(runs_dir)]) == 0
  assert launched == [(str(stale), None)]  # s0 emptied before its launch; s1 skipped
  assert json.loads((runs_dir / 'hawk-0.8M-s0.json').read_text())['steps'] == 1800


def test_the_default_runs_are_kept_in_the_repository_without_checkpoints():
  import subprocess  # pylint: disable=g-import-not-at-top
  assert training.default_runs_dir(1) == entries.HERE / 'runs'
  assert training.default_runs_dir(0.01).name == 'zoo-study-x0.01'  # scaled checks: not kept
  ignored = subprocess.run(
      ['git', 'check-ignore', '--no-index', 'experiments/zoo/runs/gpt-5M-s0/checkpoints/latest/9',
       'experiments/zoo/runs/sweeps/gpt/trial_0/checkpoints/best/3',
       'experiments/zoo/runs/gpt-5M-s0.log', 'experiments/zoo/runs/gpt-5M-s0/results.json'],
      cwd=entries.ROOT, capture_output=True, text=True, check=False)
  if ignored.returncode == 128:
    pytest.skip('not a git checkout')
  assert ignored.stdout.split() == [
      'experiments/zoo/runs/gpt-5M-s0/checkpoints/latest/9',
      'experiments/zoo/runs/sweeps/gpt/trial_0/checkpoints/best/3',
      'experiments/zoo/runs/gpt-5M-s0.log']


def test_the_sweep_gets_a_third_of_the_budget_and_parallel_trials_a_core_each(tmp_path,
                                                                               monkeypatch):
  budget = tmp_path / 'budget.json'
  budget.write_text(json.dumps({'budget_seconds': 900, 'smoke': False, 'entries': {
      'mingru-0.8M': {'seconds_per_step': 0.1, 'steps': 9000}}}))
  commands = []
  monkeypatch.setattr(processes, 'run_logged', lambda command, log: commands.append(command) or 0)
  monkeypatch.setattr(training.os, 'cpu_count', lambda: 2)
  common = ['--only', 'mingru', '--budget_file', str(budget), '--runs_dir', str(tmp_path)]
  assert study.main(['sweep', *common, '--parallel', '2']) == 0
  assert study.main(['sweep', *common]) == 0
  parallel, alone = commands
  assert parallel[1:7] == ['launch.py', '--config', 'experiments/zoo/sweep_config.py:mingru',
                           '--workdir', str(tmp_path / 'sweeps' / 'mingru'), '--sweep']
  assert '--parallel=2' in parallel and '--config.parallel.cpu_devices=1' in parallel
  assert '--config.train.num_steps=3000' in parallel and '--config.eval.every_steps=300' in parallel
  assert not any('parallel' in arg for arg in alone)
  assert [a for a in alone if 'num_steps' in a] == ['--config.train.num_steps=3000']


def test_a_kept_runs_command_is_the_same_in_any_checkout():
  """The command `run` records for an entry (and compares before resuming) names its workdir
  relative to the repository, which may be cloned anywhere."""
  inside = entries.launch_command('configs/zoo.py:gpt', entries.HERE / 'runs' / 'gpt-5M-s0', {})
  assert inside[4:6] == ['--workdir', 'experiments/zoo/runs/gpt-5M-s0']
  assert entries.launch_command('c', '/elsewhere/w', {})[4:6] == ['--workdir', '/elsewhere/w']


def test_short_runs_warm_up_for_a_tenth_of_their_steps_and_evaluate_ten_times():
  # Long enough: the variant's 200 warmup steps, and no override (the command is unchanged).
  assert entries.warmup_overrides('lstm', 2907) == {}
  assert entries.warmup_overrides('mamba', 497) == {'optim.warmup_steps': 49}
  mamba_5m = entries.run_overrides(entries.Entry('mamba', '5M', 0), 328, {}, smoke=False)
  assert mamba_5m['optim.warmup_steps'] == 32
  lstm = entries.run_overrides(entries.Entry('lstm', '0.8M', 0), 8721, {}, smoke=False)
  assert 'optim.warmup_steps' not in lstm
  # Ten evaluations, the last at the final step, not an eleventh a step before it.
  assert lstm['eval.every_steps'] == 873 and 8721 // 873 == 9
  assert entries.eval_every(2000) == 200 and entries.eval_every(5) == 1


def _sweep(sweep_dir, trials):
  """A finished-looking sweep: {trial: (learning rate, dropout, final val loss or None)}."""
  status = {}
  for name, (lr, dropout, loss) in trials.items():
    (sweep_dir / name).mkdir(parents=True)
    (sweep_dir / name / 'config.json').write_text(json.dumps({
        'optim': {'learning_rate': lr}, 'model': {'dropout': dropout},
        'train': {'num_steps': 300}}))
    if loss is not None:
      (sweep_dir / name / 'results.json').write_text(json.dumps({
          'val_loss': loss, 'best_val_loss': loss, 'eval_protocol': 'stream'}))
    status[name] = {'status': 'done' if loss is not None else 'interrupted'}
  (sweep_dir / 'sweep.json').write_text(json.dumps({'trials': status}))


def test_pick_refuses_an_unfinished_sweep_and_a_best_at_the_edge(tmp_path):
  runs = tmp_path / 'runs'
  _sweep(runs / 'sweeps' / 'hawk', {'a': (0.001, 0.0, 1.60), 'b': (0.002, 0.0, 1.55),
                                    'c': (0.004, 0.0, None)})
  _sweep(runs / 'sweeps' / 'gpt', {'a': (0.001, 0.0, 1.60), 'b': (0.002, 0.0, 1.57),
                                   'c': (0.004, 0.0, 1.55)})
  _sweep(runs / 'sweeps' / 'mingru', {'a': (0.001, 0.1, 1.60), 'b': (0.002, 0.1, 1.52),
                                      'c': (0.004, 0.1, 1.58)})
  hparams = tmp_path / 'hparams.json'
  common = ['--runs_dir', str(runs), '--hparams_file', str(hparams)]
  assert study.main(['pick', '--only', 'hawk,gpt,mingru', *common]) == 0
  picked = json.loads(hparams.read_text())
  assert list(picked) == ['mingru']  # hawk: a trial left; gpt: best at the largest rate
  assert picked['mingru']['overrides'] == {'optim.learning_rate': 0.002, 'model.dropout': 0.1}
  assert study.main(['pick', '--only', 'hawk', '--partial', *common]) == 0
  assert json.loads(hparams.read_text())['hawk']['trial'] == 'b'


def test_run_refuses_models_without_swept_hparams_or_with_a_stale_speed(tmp_path, monkeypatch,
                                                                       capsys):
  budget = tmp_path / 'budget.json'
  budget.write_text(json.dumps({'budget_seconds': 900, 'smoke': False, 'entries': {
      'hawk-5M': {'seconds_per_step': 0.5, 'steps': 1800, 'overrides': {}}}}))
  launched = []
  monkeypatch.setattr(processes, 'run_logged', lambda command, log: launched.append(command) or 0)
  hparams = tmp_path / 'hparams.json'
  common = ['run', '--only', 'hawk-5M', '--budget_file', str(budget), '--hparams_file',
            str(hparams), '--runs_dir', str(tmp_path / 'runs')]
  with pytest.raises(SystemExit, match='no swept hyperparameters for hawk'):
    study.main(common)
  # Swept dropout 0.1, but the speed was measured at the variant's 0: the budget is stale.
  hparams.write_text(json.dumps({'hawk': {'overrides': {'optim.learning_rate': 0.002,
                                                        'model.dropout': 0.1}}}))
  assert study.main(common) == 1
  assert 'measured with dropout 0, its run has 0.1' in capsys.readouterr().out
  assert not launched


def test_the_stretch_extras_are_outside_the_plan_until_named():
  assert all(not e.recipe for e in entries.select(None)) and len(entries.select(None)) == 19
  assert [e.name for e in entries.select('lstm')] == ['lstm-0.8M-s0', 'lstm-0.8M-s1',
                                                      'lstm-0.8M-s2', 'lstm-5M-s0']
  assert [e.name for e in entries.select('windows')] == [
      'hawk-5M-windows-s0', 'lstm-0.8M-windows-s0', 'mingru-0.8M-windows-s0']
  extra = entries.select('lstm-0.8M-windows')[0]
  overrides = entries.run_overrides(extra, 9000, {'lstm': {'overrides': {
      'optim.learning_rate': 0.01}}}, smoke=False)
  assert (overrides['data.batching'], overrides['data.seq_len'], overrides['data.batch_size'],
          overrides['optim.learning_rate'], overrides['eval.window']) == ('windows', 256, 8,
                                                                          0.01, 256)


def test_the_table_puts_the_extras_apart_judged_against_the_plan(tmp_path):
  for seed, loss in enumerate((1.50, 1.52, 1.54)):
    _finished(tmp_path / 'runs', f'lstm-0.8M-s{seed}', loss, loss + 0.1)
  _finished(tmp_path / 'runs', 'lstm-0.8M-windows-s0', 1.53, 1.58)
  from configs import shakespeare  # pylint: disable=g-import-not-at-top
  for run in (tmp_path / 'runs').iterdir():
    (run / 'config.json').write_text(shakespeare.get_config('smoke').to_json_best_effort())
  budget = tmp_path / 'budget.json'
  budget.write_text(json.dumps({'budget_seconds': 900, 'smoke': False, 'entries': {}}))
  assert study.main(['table', '--runs_dir', str(tmp_path / 'runs'), '--budget_file',
                     str(budget), '--out', str(tmp_path / 'out')]) == 0
  text = (tmp_path / 'out' / 'table.md').read_text()
  assert '(3 finished runs of 19)' in text
  plan_part, extras_part = text.split('## Attempts at the stretch goal')
  assert 'windows' not in plan_part.split('| lstm |')[1].split('\n')[0]
  row = next(line for line in extras_part.splitlines() if line.startswith('| lstm (windows) |'))
  assert row.endswith('| 1/1 | +0.0100: tie | best |')  # stream: LSTM seeds' 1.52 is best


class FakeLaunch:
  """processes.run_logged for `speed`, `dropout` and `run` without training: a speed run writes
  `chars_per_sec[dropout]`, a run writes `final[dropout]` as its val loss; `stop` names runs
  that stop once (SIGTERM's 143) before they finish."""

  def __init__(self, final, chars_per_sec, stop=()):
    self.final, self.chars_per_sec, self.stop = final, chars_per_sec, set(stop)
    self.launched = []

  def __call__(self, command, log):
    workdir = pathlib.Path(command[command.index('--workdir') + 1])
    flags = dict(a[len('--config.'):].split('=', 1) for a in command if a.startswith('--config.'))
    self.launched.append((workdir.name, flags['model.dropout'], int(flags['train.num_steps'])))
    if workdir.name in self.stop:
      self.stop.discard(workdir.name)
      return 143
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / 'config.json').write_text(json.dumps({'data': {'batch_size': 32, 'seq_len': 64}}))
    (workdir / 'results.json').write_text(json.dumps({
        'steps': int(flags['train.num_steps']),
        'chars_per_sec': self.chars_per_sec[flags['model.dropout']],
        'val_loss': self.final[flags['model.dropout']], 'eval_protocol': 'stream',
        'val_loss_stream': self.final[flags['model.dropout']], 'val_loss_windows': 1.6,
        'best_val_loss': 1.45, 'best_step': 7000}))
    return 0


def _dropout_files(tmp_path, swept_dropout=0.0, measured=None):
  """budget.json (with the plan key's own measurement at `measured` dropout, if given) and
  hparams.json with the LSTM's pick; the common arguments."""
  entries_ = {}
  if measured is not None:
    entries_['lstm-0.8M'] = {'seconds_per_step': 0.25, 'steps': 3600,
                             'overrides': {'model.dropout': measured}}
  (tmp_path / 'budget.json').write_text(json.dumps({
      'budget_seconds': 900, 'smoke': False, 'speed_steps': 150, 'entries': entries_}))
  (tmp_path / 'hparams.json').write_text(json.dumps({'lstm': {'overrides': {
      'optim.learning_rate': 0.01, 'model.dropout': swept_dropout}}}))
  return ['--budget_file', str(tmp_path / 'budget.json'), '--hparams_file',
          str(tmp_path / 'hparams.json'), '--runs_dir', str(tmp_path / 'runs')]


FINAL = {'0.0': 1.55, '0.1': 1.49, '0.2': 1.50, '0.3': 1.40}  # 0.3: past the stop, never run
SPEED = {'0.0': 8192.0, '0.1': 4096.0, '0.2': 2048.0, '0.3': 2048.0}  # 0.25, 0.5, 1 s a step


def test_dropout_is_chosen_at_the_full_budget_and_its_winner_is_the_seed_0_run(tmp_path,
                                                                                monkeypatch):
  """`dropout` climbs the ladder from the sweep's dropout with seed-0 runs of the full budget,
  each timed at its own dropout, and stops at the first that does not improve; `run` then
  copies the winner as the plan's seed 0 and trains seed 1 at the chosen dropout, with the
  winner's step budget. The 5M entry keeps the sweep's dropout."""
  common = _dropout_files(tmp_path)
  fake = FakeLaunch(FINAL, SPEED)
  monkeypatch.setattr(processes, 'run_logged', fake)
  monkeypatch.setattr(processes, 'busy_cores', lambda: 0.0)
  scratch = ['--scratch', str(tmp_path / 'speed')]
  with pytest.raises(SystemExit, match='run `dropout --only lstm` first'):
    study.main(['run', '--only', 'lstm-0.8M-s1', *common])
  assert study.main(['dropout', '--only', 'lstm', *scratch, *common]) == 0
  # The first rung timed alone, the first above 0 in pairs with it (their ratio sets its
  # steps), and 0.2 shares 0.1's budget: any rate above 0 runs the same operations, so the
  # fake's slower 0.2 is never asked for.
  pair = lambda rung: [('lstm-0.8M-d0', '0.0', 150), (f'lstm-0.8M-d{rung}', rung, 150),
                       (f'lstm-0.8M-d{rung}', rung, 150), ('lstm-0.8M-d0', '0.0', 150),
                       ('lstm-0.8M-d0', '0.0', 150), (f'lstm-0.8M-d{rung}', rung, 150)]
  assert fake.launched == [('lstm-0.8M-d0', '0.0', 150), ('lstm-0.8M-d0-s0', '0.0', 3600),
                           *pair('0.1'), ('lstm-0.8M-d0.1-s0', '0.1', 1800),
                           ('lstm-0.8M-d0.2-s0', '0.2', 1800)]
  hparams = json.loads((tmp_path / 'hparams.json').read_text())
  chosen = hparams['lstm']['full_budget']
  assert chosen['dropout'] == 0.1 and [r['dropout'] for r in chosen['runs']] == [0.0, 0.1, 0.2]
  budget = json.loads((tmp_path / 'budget.json').read_text())['entries']
  assert (budget['lstm-0.8M']['steps'], budget['lstm-0.8M']['copied_from']) == (1800,
                                                                               'lstm-0.8M-d0.1')
  # Again: every rung is done, nothing trains, the same choice.
  fake.launched.clear()
  assert study.main(['dropout', '--only', 'lstm', *scratch, *common]) == 0
  assert not fake.launched
  assert json.loads((tmp_path / 'hparams.json').read_text())['lstm']['full_budget'] == chosen

  assert study.main(['run', '--only', 'lstm-0.8M-s0,lstm-0.8M-s1', *common]) == 0
  assert fake.launched == [('lstm-0.8M-s1', '0.1', 1800)]
  runs = tmp_path / 'runs'
  assert json.loads((runs / 'lstm-0.8M-s0' / 'results.json').read_text())['val_loss'] == 1.49
  assert json.loads((runs / 'lstm-0.8M-s0.json').read_text())['copied_from'].endswith(
      'dropout/lstm-0.8M-d0.1-s0')
  assert entries.run_overrides(entries.Entry('lstm', '5M', 0), 1500, hparams,
                               smoke=False)['model.dropout'] == 0.0
  # `speed` leaves the copied key alone: the rung is what is measured.
  fake.launched.clear()
  assert study.main(['speed', '--only', 'lstm-0.8M', *scratch, *common]) == 0
  assert not fake.launched


def test_the_dropout_ladder_resumes_reuses_the_plan_keys_speed_and_starts_at_the_sweeps(
    tmp_path, monkeypatch):
  """A ladder stopped mid-rung resumes there; the plan key's own measurement (dropout 0.1
  here, the sweep's) is its rung's, not measured again, and the rungs above share it; a
  sweep's dropout of 0.1 starts the ladder at 0.1."""
  common = _dropout_files(tmp_path, swept_dropout=0.1, measured=0.1)
  fake = FakeLaunch({**FINAL, '0.2': 1.45}, SPEED, stop={'lstm-0.8M-d0.2-s0'})
  monkeypatch.setattr(processes, 'run_logged', fake)
  monkeypatch.setattr(processes, 'busy_cores', lambda: 0.0)
  scratch = ['--scratch', str(tmp_path / 'speed')]
  assert study.main(['dropout', '--only', 'lstm', *scratch, *common]) == 143
  assert 'full_budget' not in json.loads((tmp_path / 'hparams.json').read_text())['lstm']
  assert study.main(['dropout', '--only', 'lstm', *scratch, *common]) == 0
  # No speed run at all: 0.2 and 0.3 share the plan key's 3,600 steps (at dropout 0.1), though
  # the fake would time them twice as slow.
  assert fake.launched == [('lstm-0.8M-d0.1-s0', '0.1', 3600), ('lstm-0.8M-d0.2-s0', '0.2', 3600),
                           ('lstm-0.8M-d0.2-s0', '0.2', 3600), ('lstm-0.8M-d0.3-s0', '0.3', 3600)]
  assert json.loads((tmp_path / 'hparams.json').read_text())['lstm']['full_budget'][
      'dropout'] == 0.3
  budget = json.loads((tmp_path / 'budget.json').read_text())['entries']
  assert budget['lstm-0.8M-d0.1']['copied_from'] == 'lstm-0.8M'  # the original, kept
  assert (budget['lstm-0.8M-d0.3']['same_cost_as'], budget['lstm-0.8M-d0.3']['steps']) == (
      'lstm-0.8M-d0.1', 3600)
  assert 'copied_from' not in budget['lstm-0.8M-d0.3']


def test_rungs_timed_before_sharing_keep_their_budgets_and_a_new_rung_shares_the_lowest(
    tmp_path, monkeypatch):
  """Rungs above 0 that were timed against the reference each (the LSTM's, before budgets were
  shared) keep their steps; a rung not yet measured shares the lowest of them; a speed measured
  at one rate above 0 still times a run at another, but not one at 0."""
  common = _dropout_files(tmp_path)
  budget_file = tmp_path / 'budget.json'
  budget = json.loads(budget_file.read_text())
  budget['entries'] = {
      'lstm-0.8M': {'seconds_per_step': 0.25, 'steps': 3600, 'overrides': {'model.dropout': 0.0}},
      'lstm-0.8M-d0.1': {'seconds_per_step': 0.5, 'steps': 1800, 'relative_to': 'lstm-0.8M-d0',
                         'ratio': 2.0, 'overrides': {'model.dropout': 0.1}},
      'lstm-0.8M-d0.2': {'seconds_per_step': 0.3, 'steps': 3000, 'relative_to': 'lstm-0.8M-d0',
                         'ratio': 1.2, 'overrides': {'model.dropout': 0.2}}}
  budget_file.write_text(json.dumps(budget))
  fake = FakeLaunch({'0.0': 1.55, '0.1': 1.50, '0.2': 1.49, '0.3': 1.48}, SPEED)
  monkeypatch.setattr(processes, 'run_logged', fake)
  monkeypatch.setattr(processes, 'busy_cores', lambda: 0.0)
  assert study.main(['dropout', '--only', 'lstm', '--scratch', str(tmp_path / 'speed'),
                     *common]) == 0
  assert fake.launched == [('lstm-0.8M-d0-s0', '0.0', 3600), ('lstm-0.8M-d0.1-s0', '0.1', 1800),
                           ('lstm-0.8M-d0.2-s0', '0.2', 3000), ('lstm-0.8M-d0.3-s0', '0.3', 1800)]
  assert json.loads(budget_file.read_text())['entries']['lstm-0.8M-d0.3']['same_cost_as'] == (
      'lstm-0.8M-d0.1')
  hparams = {'lstm': {'overrides': {'model.dropout': 0.0}, 'full_budget': {'dropout': 0.2}}}
  at = lambda rate: {'overrides': {'model.dropout': rate}}
  key = entries.Entry('lstm', '0.8M', 1)
  assert budgets.budget_is_stale(key, at(0.1), hparams, smoke=False) is None
  assert 'dropout 0, its run has 0.2' in budgets.budget_is_stale(key, at(0.0), hparams, False)


def test_dropout_refuses_a_busy_machine_and_run_refuses_a_seed_0_that_is_not_the_winner(
    tmp_path, monkeypatch, capsys):
  common = _dropout_files(tmp_path)
  fake = FakeLaunch(FINAL, SPEED)
  monkeypatch.setattr(processes, 'run_logged', fake)
  monkeypatch.setattr(processes, 'busy_cores', lambda: 1.5)
  scratch = ['--scratch', str(tmp_path / 'speed')]
  assert study.main(['dropout', '--only', 'lstm', *scratch, *common]) == 1
  assert '1.50 cores busy' in capsys.readouterr().out and not fake.launched
  assert study.main(['dropout', '--only', 'lstm', '--allow_busy', *scratch, *common]) == 0
  # The winner's speed re-measured under the plan key (by hand): seed 0 would be another run.
  budget_file = tmp_path / 'budget.json'
  budget = json.loads(budget_file.read_text())
  budget['entries']['lstm-0.8M'] = {**budget['entries']['lstm-0.8M'], 'steps': 1700}
  budget_file.write_text(json.dumps(budget))
  fake.launched.clear()
  assert study.main(['run', '--only', 'lstm-0.8M-s0', *common]) == 1
  assert 'its dropout was chosen on lstm-0.8M-d0.1-s0, whose command differs' in (
      capsys.readouterr().out)
  assert not fake.launched and not (tmp_path / 'runs' / 'lstm-0.8M-s0').exists()


def test_pick_keeps_the_dropout_choice_while_the_pick_is_the_same(tmp_path, capsys):
  runs = tmp_path / 'runs'
  _sweep(runs / 'sweeps' / 'mingru', {'a': (0.001, 0.0, 1.60), 'b': (0.002, 0.0, 1.52),
                                      'c': (0.004, 0.0, 1.58)})
  hparams = tmp_path / 'hparams.json'
  choice = {'dropout': 0.1, 'runs': []}
  hparams.write_text(json.dumps({'mingru': {'overrides': {
      'optim.learning_rate': 0.002, 'model.dropout': 0.0}, 'full_budget': choice}}))
  common = ['pick', '--only', 'mingru', '--runs_dir', str(runs), '--hparams_file', str(hparams)]
  assert study.main(common) == 0
  assert json.loads(hparams.read_text())['mingru']['full_budget'] == choice
  (runs / 'sweeps' / 'mingru' / 'a' / 'results.json').write_text(json.dumps({
      'val_loss': 1.40, 'best_val_loss': 1.40, 'eval_protocol': 'stream'}))
  assert study.main([*common, '--partial']) == 0  # another pick (at an edge: --partial)
  assert 'full_budget' not in json.loads(hparams.read_text())['mingru']
  assert 'run `dropout` again' in capsys.readouterr().out


def test_a_scaled_or_smoke_dropout_choice_writes_neither_of_the_studys_files(tmp_path):
  with pytest.raises(SystemExit, match='give --hparams_file elsewhere'):
    study.main(['dropout', '--budget_scale', '0.01'])
  with pytest.raises(SystemExit, match='give --budget_file elsewhere'):
    study.main(['dropout', '--smoke', '--hparams_file', str(tmp_path / 'h.json'),
                '--budget_file', str(entries.DEFAULT_BUDGET_FILE.relative_to(entries.ROOT))])


def test_the_dropout_table_marks_the_choice():
  rows = report.dropout_table({'lstm': {'overrides': {'model.dropout': 0.0}, 'full_budget': {
      'dropout': 0.1, 'runs': [
          {'dropout': 0.0, 'steps': 8721, 'val_loss': 1.5568, 'val_loss_stream': 1.5568,
           'val_loss_windows': 1.5833, 'best_val_loss': 1.5449, 'best_step': 5238,
           'train_time': 922.4},
          {'dropout': 0.1, 'steps': 7850, 'val_loss': 1.4855, 'val_loss_stream': 1.4855,
           'val_loss_windows': None, 'best_val_loss': None, 'best_step': None}]}},
      'gpt': {'overrides': {'model.dropout': 0.0}}})
  assert rows[2:] == ['| lstm | 0 | 0 | 8,721 | 922 | 1.5568 | 1.5833 | 1.5449 (5,238) |  |',
                      '| lstm | 0 | 0.1 | 7,850 | - | 1.4855 | - | - | yes |']
  assert report.dropout_table({'gpt': {'overrides': {}}}) == []


def test_each_carries_on_past_a_failure_and_stops_at_an_interruption(capsys):
  seen = []
  step = lambda status: seen.append(status) or status
  assert processes.each([('a', 0), ('b', 1), ('c', 0)], step) == 1
  assert 'not finished: b' in capsys.readouterr().out and seen == [0, 1, 0]
  seen.clear()
  assert processes.each([('a', 1), ('b', 143), ('c', 0)], step) == 143 and seen == [1, 143]


def _fake_timings(monkeypatch, seconds: list[float]) -> list:
  """Replaces `speed`'s launch.py runs by `seconds` a step, one per run in turn; returns the
  list of entries timed, in order."""
  timed, left = [], iter(seconds)

  def fake(entry, steps, hparams, args, refuse_busy):
    timed.append(entry)
    return 0, {'seconds_per_step': next(left), 'chars_per_step': 2048}

  monkeypatch.setattr(budgets, '_timed', fake)
  return timed


def test_a_rungs_ratio_is_the_median_of_three_alternating_pairs(tmp_path, monkeypatch):
  """One run 30% slow (the LSTM's reference, first in a sitting: 0.134 s a step, later 0.104)
  must not set a rung's budget: the ratio is the median of the pairs' ratios, not the ratio
  of sums (which would give 0.997 here, as if dropout were free, where it costs 1.1 x)."""
  timed = _fake_timings(monkeypatch, [0.134, 0.1115,   # pair 1: reference, rung (the outlier)
                                      0.1145, 0.1042,  # pair 2: rung, reference
                                      0.1050, 0.1160])  # pair 3: reference, rung
  budget_file = tmp_path / 'budget.json'
  budget = {'budget_seconds': 900, 'speed_steps': 150,
            'entries': {'lstm-0.8M-d0': {'seconds_per_step': 0.1032}}}
  budget_file.write_text(json.dumps(budget))
  reference, rung = entries.dropout_candidate('lstm', 0.0), entries.dropout_candidate('lstm', 0.1)
  args = type('Args', (), {'budget_file': str(budget_file)})()
  assert budgets.measure_relative_speed(rung, reference, budget, {}, args) == 0
  assert [e.key for e in timed] == ['lstm-0.8M-d0', 'lstm-0.8M-d0.1', 'lstm-0.8M-d0.1',
                                    'lstm-0.8M-d0', 'lstm-0.8M-d0', 'lstm-0.8M-d0.1']
  written = json.loads(budget_file.read_text())['entries']['lstm-0.8M-d0.1']
  assert written['ratio'] == pytest.approx(0.1145 / 0.1042)
  assert written['steps'] == int(900 // (0.1032 * 0.1145 / 0.1042)) == 7936
  assert written['relative_to'] == 'lstm-0.8M-d0' and len(written['pairs']) == 3


def test_a_rung_timed_faster_than_its_reference_gets_the_references_budget(tmp_path,
                                                                          monkeypatch):
  """Dropout adds work: Mamba's rung 0.1 timed at 0.953 x (pairs 0.87, 1.01, 0.95) would have
  had 5% more steps than dropout 0; a median under 1 counts as 1."""
  _fake_timings(monkeypatch, [0.704, 0.610, 0.639, 0.632, 0.804, 0.766])
  budget_file = tmp_path / 'budget.json'
  budget = {'budget_seconds': 900, 'speed_steps': 150,
            'entries': {'mamba-0.8M-d0': {'seconds_per_step': 0.6036, 'steps': 1491}}}
  budget_file.write_text(json.dumps(budget))
  args = type('Args', (), {'budget_file': str(budget_file)})()
  assert budgets.measure_relative_speed(entries.dropout_candidate('mamba', 0.1),
                                        entries.dropout_candidate('mamba', 0.0), budget, {},
                                        args) == 0
  written = json.loads(budget_file.read_text())['entries']['mamba-0.8M-d0.1']
  assert (written['ratio'], written['steps']) == (1.0, 1491)
  assert written['measured_ratio'] == pytest.approx(0.766 / 0.804)


def test_an_extra_is_timed_in_pairs_with_its_plan_entry_and_may_be_cheaper(tmp_path,
                                                                          monkeypatch):
  """The machine drifts between days (Mamba 5M: 2.74 s a step on 12-01, 1.17 on 12-02): an
  extra's budget is its plan entry's measurement times their ratio in one sitting, and a
  recipe of other batches may cost less (no floor of 1 as for dropout)."""
  # ref, extra; extra, ref; ref, extra
  timed = _fake_timings(monkeypatch, [0.40, 0.30, 0.31, 0.41, 0.42, 0.29])
  budget_file = tmp_path / 'budget.json'
  budget_file.write_text(json.dumps({'budget_seconds': 900, 'speed_steps': 150, 'entries': {
      'hawk-5M': {'seconds_per_step': 0.6, 'steps': 1500}}}))
  args = study.parser().parse_args(['speed', '--only', 'hawk-5M-windows',
                                    '--budget_file', str(budget_file)])
  assert args.fn(args) == 0
  assert [e.name for e in timed] == ['hawk-5M-s0', 'hawk-5M-windows-s0', 'hawk-5M-windows-s0',
                                     'hawk-5M-s0', 'hawk-5M-s0', 'hawk-5M-windows-s0']
  written = json.loads(budget_file.read_text())['entries']['hawk-5M-windows']
  assert written['relative_to'] == 'hawk-5M'
  assert written['ratio'] == pytest.approx(0.30 / 0.40)  # the median of 0.75, 0.756, 0.690
  assert written['steps'] == int(900 // (0.6 * 0.30 / 0.40)) == 2000
  # A plan entry re-timed on another day, against another (one pair here): Mamba 5M ran at
  # 1.17 s a step on 12-02 where the plan's 12-01 measurement said 2.74.
  timed = _fake_timings(monkeypatch, [0.435, 1.17])
  args = study.parser().parse_args(['speed', '--only', 'mamba-5M', '--relative_to', 'hawk-5M',
                                    '--pairs', '1', '--budget_file', str(budget_file)])
  assert args.fn(args) == 0
  assert [e.name for e in timed] == ['hawk-5M-s0', 'mamba-5M-s0']
  written = json.loads(budget_file.read_text())['entries']['mamba-5M']
  assert (written['relative_to'], written['steps']) == ('hawk-5M', int(900 // (0.6 * 1.17 /
                                                                              0.435)))
  # Without the reference's measurement there is nothing to scale: one error line.
  budget_file.write_text(json.dumps({'budget_seconds': 900, 'speed_steps': 150, 'entries': {}}))
  assert args.fn(args) == 1
  for bad, says in ((['--relative_to', 'hawk'], 'not a key of the plan'),
                    (['--pairs', '0'], '--pairs must be at least 1')):
    args = study.parser().parse_args(['speed', '--only', 'mamba-5M', '--relative_to', 'hawk-5M',
                                      '--budget_file', str(budget_file), *bad])
    with pytest.raises(SystemExit, match=says):
      args.fn(args)
  assert [e.name for e in timed] == ['hawk-5M-s0', 'mamba-5M-s0']  # none after the first error


@pytest.mark.parametrize('config_module,variant,run_name', [
    (shakespeare, 'cpu15', f'{entries.DROPOUT_SUBDIR}/lstm-0.8M-d0.2-s0'),
    (zoo, 'hawk_cpu15', 'hawk-5M-s0')])
def test_the_cpu15_variants_are_the_studys_best_runs(config_module, variant, run_name):
  """configs/shakespeare.py:cpu15 (the best at 0.8M) and configs/zoo.py:hawk_cpu15 (the best)
  quote their study runs' numbers; those hold only while the variant is that run's config,
  field for field."""
  run = entries.HERE / 'runs' / run_name
  recorded = json.loads((run / 'config.json').read_text())
  assert json.loads(json.dumps(config_module.get_config(variant).to_dict())) == recorded
  results = json.loads((run / 'results.json').read_text())
  doc = config_module.VARIANTS[variant].__doc__
  assert f'{results["val_loss_stream"]:.4f}' in doc and f'{results["val_loss_windows"]:.4f}' in doc


def test_a_stopped_study_stops_rather_than_start_the_next_run(tmp_path):
  """A SIGTERM to the study's process group can kill launch.py before it handles signals
  (exit -15); that and any run's end after the study itself got a SIGTERM are interruptions,
  so `each` stops there instead of failing the entry and starting the next one."""
  import signal
  import sys
  import threading
  killed = processes.run_logged(
      [sys.executable, '-c', 'import os, signal; os.kill(os.getpid(), signal.SIGTERM)'],
      tmp_path / 'killed.log')
  assert killed == 143
  calls = []

  def step(item):
    calls.append(item)
    if item == 'b':  # the study gets a SIGTERM while b runs; b exits 0 as it goes
      timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGTERM))
      timer.start()
      try:
        return processes.run_logged(
            [sys.executable, '-c', 'import signal, sys, time\n'
             'signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\ntime.sleep(30)'],
            tmp_path / 'b.log')
      finally:
        timer.join()
    return 0

  assert processes.each([('a', 'a'), ('b', 'b'), ('c', 'c')], step) == 143
  assert calls == ['a', 'b']
  assert '$ ' in (tmp_path / 'b.log').read_text()


def test_the_new_models_are_extras_swept_at_three_rates_without_a_dropout_ladder(
    tmp_path, monkeypatch):
  """Models added after the plan (issue 30): one seed at 0.8M outside the plan, a three-point
  learning-rate sweep at dropout 0 on their own budget key, a third of its steps a trial, and
  `run` trains them at the sweep's pick without a full-budget dropout choice."""
  from experiments.zoo import sweep_config  # pylint: disable=g-import-not-at-top
  assert all(not entries.is_new_model(e) for e in entries.select(None))
  new = entries.select(entries.NEW_MODELS_RECIPE)
  assert [e.name for e in new] == [f'{m}-0.8M-new-s0' for m in entries.NEW_MODELS]
  assert [e.name for e in entries.select('lru-0.8M-new')] == ['lru-0.8M-new-s0']
  assert entries.sweep_key(new[0]) == 'lru-0.8M-new'
  assert entries.sweep_key(entries.Entry('lru', '0.8M', 0, 'windows')) == 'lru-0.8M'
  assert not entries.swept(entries.Entry('hawk', '0.8M', 0, 'windows'))
  for model in entries.NEW_MODELS:
    trials = sweep_config.get_sweep(model)
    assert [t['optim.learning_rate'] for t in trials] == list(
        sweep_config.NEW_MODEL_SWEEPS[model])
    assert len(trials) == 3 and {t['model.dropout'] for t in trials} == {0.0}
    assert entries.NEW_MODELS[model][1] in {e.key for e in entries.ENTRIES}
  assert len(sweep_config.get_sweep('hawk')) == 8  # the plan's sweeps are unchanged

  budget = tmp_path / 'budget.json'
  budget.write_text(json.dumps({'budget_seconds': 900, 'smoke': False, 'entries': {
      'lru-0.8M-new': {'seconds_per_step': 0.15, 'steps': 6000, 'overrides': {}}}}))
  commands = []
  monkeypatch.setattr(processes, 'run_logged', lambda command, log: commands.append(command) or 0)
  runs = tmp_path / 'runs'
  common = ['--only', 'lru-0.8M-new', '--budget_file', str(budget), '--runs_dir', str(runs)]
  assert study.main(['sweep', *common]) == 0
  assert commands[0][1:7] == ['launch.py', '--config', 'experiments/zoo/sweep_config.py:lru',
                              '--workdir', str(runs / 'sweeps' / 'lru'), '--sweep']
  assert '--config.train.num_steps=2000' in commands[0]
  assert '--config.eval.window=256' in commands[0]
  _sweep(runs / 'sweeps' / 'lru', {'a': (0.002, 0.0, 1.60), 'b': (0.004, 0.0, 1.55),
                                   'c': (0.008, 0.0, 1.58)})
  hparams = tmp_path / 'hparams.json'
  assert study.main(['pick', *common, '--hparams_file', str(hparams)]) == 0
  picked = json.loads(hparams.read_text())
  assert picked['lru']['overrides'] == {'optim.learning_rate': 0.004, 'model.dropout': 0.0}
  assert 'full_budget' not in picked['lru']
  assert study.main(['run', *common, '--hparams_file', str(hparams)]) == 0
  run = commands[-1]
  assert run[1:6] == ['launch.py', '--config', 'configs/zoo.py:lru', '--workdir',
                      str(runs / 'lru-0.8M-new-s0')]
  assert '--config.optim.learning_rate=0.004' in run and '--config.model.dropout=0.0' in run
  assert '--config.train.num_steps=6000' in run and '--config.seed=0' in run
  # A plan model's 0.8M entry still waits for its dropout ladder.
  hparams.write_text(json.dumps({**picked, 'hawk': picked['lru']}))
  with pytest.raises(SystemExit, match='no full-budget dropout for hawk'):
    study.main(['run', '--only', 'hawk-0.8M', '--budget_file', str(budget), '--runs_dir',
                str(runs), '--hparams_file', str(hparams)])


def test_a_new_model_is_timed_in_pairs_with_the_plan_key_it_names(tmp_path, monkeypatch):
  """A new model has no plan entry of its own: `speed` times it against entries.NEW_MODELS's
  key (or --relative_to's) and scales that key's measurement from the plan's sitting."""
  timed = _fake_timings(monkeypatch, [0.20, 0.30, 0.31, 0.21, 0.19, 0.28])
  budget_file = tmp_path / 'budget.json'
  reference = entries.NEW_MODELS['lru'][1]
  budget_file.write_text(json.dumps({'budget_seconds': 900, 'speed_steps': 150, 'entries': {
      reference: {'seconds_per_step': 0.15, 'steps': 6000}}}))
  args = study.parser().parse_args(['speed', '--only', 'lru-0.8M-new', '--budget_file',
                                    str(budget_file)])
  assert args.fn(args) == 0
  assert [e.name for e in timed] == [f'{reference}-s0', 'lru-0.8M-new-s0', 'lru-0.8M-new-s0',
                                     f'{reference}-s0', f'{reference}-s0', 'lru-0.8M-new-s0']
  written = json.loads(budget_file.read_text())['entries']['lru-0.8M-new']
  assert written['relative_to'] == reference
  assert written['ratio'] == pytest.approx(0.31 / 0.21)  # median of 1.5, 1.476, 1.474
  assert written['steps'] == int(900 // (0.15 * 0.31 / 0.21))


def test_the_table_puts_the_new_models_apart_with_their_sweeps(tmp_path):
  runs = tmp_path / 'runs'
  for seed, loss in enumerate((1.50, 1.52, 1.54)):
    _finished(runs, f'lstm-0.8M-s{seed}', loss, loss + 0.1)
  _finished(runs, 'lru-0.8M-new-s0', 1.49, 1.70)
  _finished(runs, 'lstm-0.8M-windows-s0', 1.53, 1.58)
  for run in runs.iterdir():
    (run / 'config.json').write_text(shakespeare.get_config('smoke').to_json_best_effort())
  for lr, loss in ((0.002, 1.60), (0.004, 1.55), (0.008, 1.58)):
    trial = runs / 'sweeps' / 'lru' / f'learning_rate={lr},dropout=0'
    trial.mkdir(parents=True)
    (trial / 'config.json').write_text(json.dumps({'optim': {'learning_rate': lr},
                                                   'model': {'dropout': 0.0}}))
    (trial / 'results.json').write_text(json.dumps({
        'steps': 2000, 'val_loss_stream': loss, 'val_loss_windows': loss + 0.05}))
  budget = tmp_path / 'budget.json'
  budget.write_text(json.dumps({'budget_seconds': 900, 'smoke': False, 'entries': {}}))
  assert study.main(['table', '--runs_dir', str(runs), '--budget_file', str(budget), '--out',
                     str(tmp_path / 'out')]) == 0
  text = (tmp_path / 'out' / 'table.md').read_text()
  assert '(3 finished runs of 19)' in text
  stretch, new = text.split('## New models (outside the plan)')
  assert '| lru' not in stretch and '| lstm (windows) |' in stretch
  assert 'New models, one seed, added on 2026-12-08 with a three-point lr sweep' in new
  row = next(line for line in new.splitlines() if line.startswith('| lru (new) |'))
  assert row.endswith('| 1/1 | best | +0.0800 |')  # judged against the plan's LSTM seeds
  assert '| lru | 0.004 | 0 | 2,000 | 1.5500 | 1.6000 | yes |' in new
  assert '| lru | 0.008 | 0 | 2,000 | 1.5800 | 1.6300 |  |' in new
