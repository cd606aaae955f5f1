"""Sweeps: combinators, trial configs and names, running, resuming, failures, HParams, compare."""

import csv
import json
import os
import re
import signal
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import LONG_RUN, ROOT, wait_for_log_line, write_sweep_config
from configs import shakespeare
from seqlab.run import checkpoint
from seqlab.analysis import compare
from seqlab.run import metrics_writer
from seqlab.run import directory as rundir
from seqlab.sweeps import declare as sweep
from seqlab.sweeps import runner as sweep_run
from seqlab import train
from seqlab.errors import SeqlabError

SAFE_NAME = re.compile(r'^[A-Za-z0-9_+=,-][A-Za-z0-9._+=,-]*$')


def test_combinators_make_the_right_trials():
  grid = sweep.product(sweep.axis('model.num_layers', [1, 2, 3]),
                       sweep.axis('model.hidden_size', [128, 256]),
                       sweep.fixed('seed', 7))
  assert len(grid) == 6
  assert grid[0] == {'model.num_layers': 1, 'model.hidden_size': 128, 'seed': 7}
  assert grid[1] == {'model.num_layers': 1, 'model.hidden_size': 256, 'seed': 7}  # last fastest
  assert grid[-1] == {'model.num_layers': 3, 'model.hidden_size': 256, 'seed': 7}
  pairs = sweep.zipped(sweep.axis('optim.learning_rate', [1e-3, 2e-3]),
                       sweep.axis('seed', [0, 1]))
  assert pairs == [{'optim.learning_rate': 1e-3, 'seed': 0}, {'optim.learning_rate': 2e-3, 'seed': 1}]
  both = sweep.chain(pairs, sweep.axis('model.cell', ['gru']))
  assert len(both) == 3 and both[2] == {'model.cell': 'gru'}
  nested = sweep.product(sweep.axis('model.cell', ['lstm', 'gru']), pairs)
  assert len(nested) == 4 and nested[3] == {'model.cell': 'gru', 'optim.learning_rate': 2e-3,
                                             'seed': 1}
  with pytest.raises(SeqlabError, match='equal length'):
    sweep.zipped(sweep.axis('seed', [0, 1]), sweep.axis('model.dropout', [0.1]))
  with pytest.raises(SeqlabError, match="'seed' is set by two"):
    sweep.product(sweep.axis('seed', [0, 1]), sweep.fixed('seed', 3))
  with pytest.raises(SeqlabError, match='no values'):
    sweep.axis('seed', [])


def _declared_sweeps():
  for path in sorted((ROOT / 'configs').glob('*.py')):
    namespace = {}
    exec(compile(path.read_text(), str(path), 'exec'), namespace)  # as launch.py loads it
    if 'get_sweep' in namespace:
      for variant in (None, *namespace.get('VARIANTS', {})):
        yield f'{path.name}:{variant}', namespace['get_config'](variant), \
            namespace['get_sweep'](variant)


@pytest.mark.parametrize('name,base,declared', list(_declared_sweeps()),
                         ids=lambda x: x if isinstance(x, str) else '')
def test_every_declared_sweep_expands_into_valid_configs(name, base, declared, tmp_path):
  trials = sweep.make_trials(base, declared)
  assert len({t.name for t in trials}) == len(trials) == len(declared)
  for trial in trials:
    assert SAFE_NAME.match(trial.name) and len(trial.name.encode()) <= 200, trial.name
    for key, value in trial.overrides.items():
      group, field = key.split('.')
      assert trial.config[group][field] == value
    train.build(trial.config, tmp_path / trial.name)  # validates it all: data, model, optim
  assert not any(tmp_path.iterdir())  # build writes nothing


def test_shakespeare_declares_the_depth_width_dropout_grid_and_a_small_smoke_grid():
  full, smoke = shakespeare.get_sweep(), shakespeare.get_sweep('smoke')
  assert len(full) == 27 and len(smoke) == 4
  assert {d['model.num_layers'] for d in full} == {1, 2, 3}
  assert {d['model.hidden_size'] for d in full} == {128, 256, 512}
  assert {d['model.dropout'] for d in full} == {0.0, 0.25, 0.5}
  names = [t.name for t in sweep.make_trials(shakespeare.get_config(), full)]
  assert 'num_layers=2,hidden_size=256,dropout=0.25' in names


def test_trial_names_are_unique_and_safe_and_bad_overrides_are_errors():
  base = shakespeare.get_config('smoke')
  odd = sweep.axis('log.sample_prime', ['a/b', '../..', 'x' * 300])
  names = [t.name for t in sweep.make_trials(base, odd)]
  assert all(SAFE_NAME.match(n) and len(n.encode()) <= 200 for n in names), names
  assert len(set(names)) == 3
  # Two keys with the same last part keep their groups apart.
  both = sweep.zipped(sweep.axis('data.seq_len', [32]), sweep.axis('eval.seq_len', [64]))
  assert sweep.make_trials(base, both)[0].name == 'data.seq_len=32,eval.seq_len=64'
  with pytest.raises(SeqlabError, match='trials 0 and 1 have the same overrides'):
    sweep.make_trials(base, sweep.axis('seed', [1, 1]))
  with pytest.raises(SeqlabError, match="unknown config key 'model.hiden_size'"):
    sweep.make_trials(base, sweep.axis('model.hiden_size', [8]))
  with pytest.raises(SeqlabError, match="model.hidden_size='big'"):
    sweep.make_trials(base, sweep.axis('model.hidden_size', ['big']))
  assert base.model.hidden_size == 32  # the base config is not changed


def test_slots_split_gpus_or_cpu_cores_without_oversubscription(monkeypatch):
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '0,1,2')
  slots = sweep_run.make_slots(2)
  assert [s.env for s in slots] == [{'CUDA_VISIBLE_DEVICES': '0'}, {'CUDA_VISIBLE_DEVICES': '1'}]
  assert len(sweep_run.make_slots(8)) == 3  # one trial per GPU
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')
  cpus = os.sched_getaffinity(0)
  slots = sweep_run.make_slots(2)
  if len(cpus) >= 2:
    assert len(slots) == 2 and not slots[0].cpus & slots[1].cpus
    assert slots[0].cpus | slots[1].cpus == cpus
  assert len(sweep_run.make_slots(len(cpus) + 5)) == len(cpus)  # at most one trial per core
  assert sweep_run.make_slots(1)[0].cpus is None  # sequential: all cores


def _launch(*args):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  return subprocess.run([sys.executable, str(ROOT / 'launch.py'), *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


def _hparams(run_dir):
  events = event_accumulator.EventAccumulator(str(run_dir))
  events.Reload()
  content = events.PluginTagToContent('hparams')
  start = plugin_data_pb2.HParamsPluginData.FromString(content['_hparams_/session_start_info'])
  return start.session_start_info.hparams, events


def test_a_sweep_runs_end_to_end_resumes_and_is_listed_in_hparams(text_file, tmp_path):
  config = write_sweep_config(tmp_path, text_file, "sweep.product(sweep.axis('optim.learning_rate', "
                                              "[3e-3, 1e-2]), sweep.fixed('model.dropout', 0.1))")
  sweep_dir = tmp_path / 'sweep'
  # One trial was interrupted earlier: the sweep resumes it from its checkpoint.
  namespace = {}
  exec(config.read_text(), namespace)  # pylint: disable=exec-used
  first = sweep.make_trials(namespace['get_config'](), namespace['get_sweep']())[0]
  train.train_and_evaluate(first.config, sweep_dir / first.name, stop_at_step=6)

  result = _launch('--config', str(config), '--sweep', '--workdir', str(sweep_dir),
                   '--parallel', '2', '--config.seed=3')
  assert result.returncode == 0, result.stderr[-3000:]
  status = json.loads((sweep_dir / 'sweep.json').read_text())['trials']
  names = ['learning_rate=0.003,dropout=0.1', 'learning_rate=0.01,dropout=0.1']
  assert list(status) == names and all(s['status'] == 'done' for s in status.values())
  assert 'resuming at step 6' in (sweep_dir / 'logs' / f'{names[0]}.log').read_text()
  # The printed command re-runs a trial alone: the sweep's overrides and the command line's.
  assert status[names[1]]['command'] == (
      f'python launch.py --config {config} --config.seed=3 --config.optim.learning_rate=0.01 '
      f'--config.model.dropout=0.1 --workdir={sweep_dir}/{names[1]}')
  for name, lr in zip(names, (3e-3, 1e-2)):
    saved = json.loads((sweep_dir / name / 'config.json').read_text())
    assert saved['optim']['learning_rate'] == lr and saved['seed'] == 3
    results = json.loads((sweep_dir / name / 'results.json').read_text())
    # HParams: the swept values as columns and the final metrics, per trial.
    hparams, events = _hparams(sweep_dir / name)
    assert hparams['optim.learning_rate'].number_value == pytest.approx(lr)
    assert hparams['model.dropout'].number_value == pytest.approx(0.1)
    for metric in ('final/val_loss', 'final/val_bpc', 'final/best_val_loss', 'final/test_loss',
                   'final/chars_per_sec', 'final/num_params'):
      (event,) = events.Scalars(metric)
      assert event.value == pytest.approx(results[metric.split('/')[1]], rel=1e-6)
  assert len({s['slot'] for s in status.values()}) == (2 if len(os.sched_getaffinity(0)) > 1
                                                       else 1)
  assert 'learning_rate=0.01,dropout=0.1 | done |' in result.stdout

  before = {n: (sweep_dir / n / 'results.json').stat().st_mtime_ns for n in names}
  again = _launch('--config', str(config), '--sweep', '--workdir', str(sweep_dir),
                  '--config.seed=3')
  assert again.returncode == 0 and '2 already done, 0 to run' in again.stdout
  assert before == {n: (sweep_dir / n / 'results.json').stat().st_mtime_ns for n in names}


@pytest.mark.parametrize('fused', [False, True], ids=['separate', 'fused'])
def test_a_failing_trial_is_recorded_and_does_not_stop_the_others(text_file, tmp_path, fused):
  config = write_sweep_config(tmp_path, text_file, "sweep.axis('model.dropout', [1.5, 0.2])")
  sweep_dir = tmp_path / 'sweep'
  result = _launch('--config', str(config), '--sweep', '--workdir', str(sweep_dir),
                   *(['--fused'] if fused else []))
  assert result.returncode == 1
  status = json.loads((sweep_dir / 'sweep.json').read_text())['trials']
  assert status['dropout=1.5']['status'] == 'failed'
  # Alone, the trial's own process exits 2; fused, its group's process reports it and exits 1.
  assert status['dropout=1.5']['exit_status'] == (1 if fused else 2)
  assert status['dropout=1.5']['error'] == (
      f'error: {"[dropout=1.5] " if fused else ""}model.dropout must be in [0, 1), got 1.5')
  assert status['dropout=0.2']['status'] == 'done'
  assert (sweep_dir / 'dropout=0.2' / 'results.json').exists()
  assert not (sweep_dir / 'dropout=1.5').exists()  # bad input writes no run directory
  assert result.stderr.strip().splitlines()[-1].startswith('error: 1 of 2 trials failed: '
                                                           'dropout=1.5')


def _fake_run(sweep_dir, name, config_changes, results, val_curve):
  run = sweep_dir / name
  run.mkdir(parents=True)
  config = json.loads(json.dumps(shakespeare.get_config('smoke').to_dict(), default=list))
  for key, value in config_changes.items():
    group, field = key.split('.')
    config[group][field] = value
  rundir.write_config(run, config)
  if results is not None:
    rundir.write_results(run, results)
  writer = metrics_writer.MetricsWriter(run)
  for step, loss in val_curve:
    writer.scalars(step, {'val/loss': loss})
  writer.close()


def test_compare_tables_a_constructed_sweep(tmp_path):
  sweep_dir = tmp_path / 'sweep'
  results = lambda best: {'best_val_loss': best, 'best_step': 40, 'val_loss': best + 0.01,
                          'val_bpc': 1.0, 'chars_per_sec': 1234.5, 'num_params': 5000,
                          'wall_time': 3.0}
  _fake_run(sweep_dir, 'hidden_size=16', {'model.hidden_size': 16}, results(1.9),
            [(20, 2.5), (40, 1.9)])
  _fake_run(sweep_dir, 'hidden_size=64', {'model.hidden_size': 64}, results(1.5),
            [(20, 2.0), (40, 1.5)])
  _fake_run(sweep_dir, 'hidden_size=32', {'model.hidden_size': 32}, None, [(20, 2.2)])
  table = compare.compare(sweep_dir)
  lines = table.splitlines()
  assert lines[0] == ('| trial | status | model.hidden_size | best_val_loss | best_step | '
                      'val_loss | val_bpc | test_loss | test_bpc | chars_per_sec | num_params | '
                      'wall_time |')
  assert [line.split(' | ')[0] for line in lines[2:]] == [
      '| hidden_size=64', '| hidden_size=16', '| hidden_size=32']  # best first, unfinished last
  assert lines[2].startswith('| hidden_size=64 | done | 64 | 1.5 | 40 | 1.51 | 1 | - | - | 1,234')
  assert lines[4].startswith('| hidden_size=32 | unfinished | 32 | - |')
  with open(sweep_dir / 'compare.csv', encoding='utf-8') as f:
    rows = list(csv.DictReader(f))
  assert [(r['trial'], r['best_val_loss']) for r in rows] == [
      ('hidden_size=64', '1.5'), ('hidden_size=16', '1.9'), ('hidden_size=32', '')]
  png = (sweep_dir / 'compare_val_loss.png').read_bytes()
  assert png.startswith(b'\x89PNG') and len(png) > 10_000
  with pytest.raises(SeqlabError, match='holds no run directories'):
    compare.compare(tmp_path)  # its only folder, sweep/, is not a run


@pytest.mark.parametrize('fused', [False, True], ids=['separate', 'fused'])
def test_sigterm_to_a_sweep_checkpoints_its_trials_and_the_rerun_finishes(
    text_file, tmp_path, fused):
  config = write_sweep_config(tmp_path, text_file, "sweep.axis('seed', [0, 1])")
  sweep_dir = tmp_path / 'sweep'
  args = [sys.executable, str(ROOT / 'launch.py'), '--config', str(config), '--sweep',
          '--workdir', str(sweep_dir), '--parallel', '2', *(['--fused'] if fused else []),
          *LONG_RUN]
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  logs = sweep_dir / 'logs'
  wait_for_log_line(logs, 'step 20/3000')
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=240)
  assert process.returncode == 143, stderr[-2000:]
  assert 'sweep stopped by SIGTERM' in stderr
  status = json.loads((sweep_dir / 'sweep.json').read_text())['trials']
  assert {s['status'] for s in status.values()} == {'interrupted'}
  stopped_at = {n: checkpoint.latest_step_on_disk(sweep_dir / n) for n in status}
  assert all(0 < step < 3000 for step in stopped_at.values()), stopped_at

  again = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-2000:]
  for name in status:
    assert json.loads((sweep_dir / name / 'results.json').read_text())['steps'] == 3000
    log = (logs / f'{"fused-0" if fused else name}.log').read_text()
    assert f'resuming at step {stopped_at[name]}' in log
