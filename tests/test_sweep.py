"""Sweeps: combinators, trial configs and names, running, resuming, failures, HParams, compare."""

import contextlib
import csv
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from ml_collections import config_dict
import pytest
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboardX import summary as tbx_summary

from conftest import (LONG_RUN, ROOT, events, run_command, start_command, wait_for_log_line,
                      write_sweep_config)
from configs import shakespeare
from seqlab.run import checkpoint
from seqlab.analysis import compare
from seqlab.run import metrics_writer
from seqlab.run import directory as rundir
from seqlab.sweeps import declare as sweep
from seqlab.sweeps import handoff
from seqlab.sweeps import hparams as sweep_hparams
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


def _config_fields(config, prefix=''):
  """{dotted key: (type of the field, its value, a placeholder's type)}: what equality misses."""
  fields = {}
  for key, value in config.items(preserve_field_references=True):
    if isinstance(value, type(config)):
      fields.update(_config_fields(value, f'{prefix}{key}.'))
    elif isinstance(value, config_dict.FieldReference):
      fields[prefix + key] = ('ref', value.get(), value.get_type())
    else:
      fields[prefix + key] = (type(value), value, None)
  return fields


def test_a_trial_process_gets_the_sweep_config_as_data(tmp_path):
  base = shakespeare.get_config('smoke')  # placeholders (data.path) and a tuple (sample_steps)
  base.lock()  # as the --config flag gives it
  declared = sweep.zipped(sweep.axis('log.sample_steps', [(3, 7), ()]),
                          sweep.axis('parallel.num_processes', [None, 2]),
                          sweep.axis('optim.learning_rate', [1e-3, float('inf')]))
  for trial in sweep.make_trials(base, declared):
    path = handoff.write_trial(tmp_path, trial)
    assert path == tmp_path / 'trials' / f'{trial.name}.json'
    child = handoff.read_trial(path)  # what `python -m seqlab.sweeps.trial` trains
    assert child.name == trial.name and child.overrides == trial.overrides
    assert child.config == trial.config and child.config.is_locked
    assert _config_fields(child.config) == _config_fields(trial.config)
    assert json.loads(child.config.to_json_best_effort()) == json.loads(
        trial.config.to_json_best_effort())
  with pytest.raises(TypeError):  # still a placeholder of type str
    child.config.unlock().data.path = 3
  # The process of a trial is the library's entry point, never launch.py again.
  command = handoff.task_command([(path, tmp_path / child.name)])
  assert command[:3] == [sys.executable, '-m', 'seqlab.sweeps.trial']
  assert f'--trial_json={path}' in command and 'launch.py' not in ' '.join(command)


def _hparams(run_dir):
  accumulator = events(run_dir)
  content = accumulator.PluginTagToContent('hparams')
  start = plugin_data_pb2.HParamsPluginData.FromString(content['_hparams_/session_start_info'])
  return start.session_start_info.hparams, accumulator


@pytest.mark.slow
def test_a_sweep_runs_end_to_end_resumes_and_is_listed_in_hparams(text_file, tmp_path):
  config = write_sweep_config(tmp_path, text_file, "sweep.product(sweep.axis('optim.learning_rate', "
                                              "[3e-3, 1e-2]), sweep.fixed('model.dropout', 0.1))")
  sweep_dir = tmp_path / 'sweep'
  # One trial was interrupted earlier: the sweep resumes it from its checkpoint.
  namespace = {}
  exec(config.read_text(), namespace)  # pylint: disable=exec-used
  first = sweep.make_trials(namespace['get_config'](), namespace['get_sweep']())[0]
  train.train_and_evaluate(first.config, sweep_dir / first.name, stop_at_step=6)

  result = run_command('--config', config, '--sweep', '--workdir', sweep_dir, '--parallel', '2',
                       '--config.seed=3', timeout=600)
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
    hparams, accumulator = _hparams(sweep_dir / name)
    assert hparams['optim.learning_rate'].number_value == pytest.approx(lr)
    assert hparams['model.dropout'].number_value == pytest.approx(0.1)
    for metric in ('final/val_loss', 'final/val_bpc', 'final/best_val_loss', 'final/test_loss',
                   'final/chars_per_sec', 'final/num_params'):
      (event,) = accumulator.Scalars(metric)
      assert event.value == pytest.approx(results[metric.split('/')[1]], rel=1e-6)
  assert len({s['slot'] for s in status.values()}) == (2 if len(os.sched_getaffinity(0)) > 1
                                                       else 1)
  # The sweep's own experiment summary: the swept keys first, the one that varies differing.
  experiment = plugin_data_pb2.HParamsPluginData.FromString(
      events(sweep_dir).PluginTagToContent('hparams')['_hparams_/experiment']).experiment
  infos = {h.name: h.differs for h in experiment.hparam_infos}
  assert list(infos)[:2] == ['optim.learning_rate', 'model.dropout']
  assert infos['optim.learning_rate'] and not infos['model.dropout'] and not infos['seed']
  assert (sweep_dir / 'logs' / f'{names[1]}.log').read_text().startswith(
      '$ python -m seqlab.sweeps.trial --trial_json=')
  assert 'learning_rate=0.01,dropout=0.1 | done |' in result.stdout

  before = {n: (sweep_dir / n / 'results.json').stat().st_mtime_ns for n in names}
  again = run_command('--config', config, '--sweep', '--workdir', sweep_dir, '--config.seed=3',
                      timeout=600)
  assert again.returncode == 0 and '2 already done, 0 to run' in again.stdout
  assert before == {n: (sweep_dir / n / 'results.json').stat().st_mtime_ns for n in names}


@pytest.mark.slow
@pytest.mark.parametrize('fused', [False, True], ids=['separate', 'fused'])
def test_a_failing_trial_is_recorded_and_does_not_stop_the_others(text_file, tmp_path, fused):
  config = write_sweep_config(tmp_path, text_file, "sweep.axis('model.dropout', [1.5, 0.2])")
  sweep_dir = tmp_path / 'sweep'
  result = run_command('--config', config, '--sweep', '--workdir', sweep_dir,
                       *(['--fused'] if fused else []), timeout=600)
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


def _post(url: str, body: dict) -> dict:
  request = urllib.request.Request(url, json.dumps(body).encode(),
                                   {'Content-Type': 'application/json'})
  with urllib.request.urlopen(request, timeout=10) as response:
    return json.loads(response.read())


@contextlib.contextmanager
def _tensorboard(logdir):
  """A TensorBoard server on `logdir` that this test starts and stops; yields
  `ask(path, body, ready)`, which POSTs until `ready(answer)` (it loads files in the background).

  The server binds a port the OS picks (`--port 0`) and prints its address: a port chosen here
  and passed on could be taken in between (TensorBoard then exits 255, as it once did in CI)."""
  log = logdir / 'tensorboard.log'
  with open(log, 'w') as sink:
    server = start_command('--logdir', logdir, '--host', '127.0.0.1', '--port', 0,
                           '--reload_interval', 1, module='tensorboard.main',
                           stdout=subprocess.DEVNULL, stderr=sink)
  address = None

  def fail(why: str):
    return pytest.fail(f'{why} (server exit status {server.poll()}); its log:\n{log.read_text()}')

  def ask(path: str, body: dict, ready, timeout: float = 120) -> dict:
    nonlocal address
    deadline, answer = time.time() + timeout, None
    while address is None and time.time() < deadline and server.poll() is None:
      found = re.search(r' at (http://127\.0\.0\.1:\d+)/', log.read_text())
      address = found and found.group(1)
      time.sleep(0.2)
    if address is None:
      return fail('tensorboard never said where it serves')
    while time.time() < deadline and server.poll() is None:
      try:
        answer = _post(address + path, body)
        if ready(answer):
          return answer
      except (urllib.error.URLError, ConnectionError):
        pass  # not up yet
      time.sleep(0.5)
    return fail(f'tensorboard never answered {path} as expected; last: {answer}')

  try:
    yield ask
  finally:
    server.terminate()
    try:
      server.wait(timeout=30)
    except subprocess.TimeoutExpired:
      server.kill()
      server.wait()


def _sessions_only(writer: metrics_writer.MetricsWriter, hparams: dict, metrics: dict,
                   step: int) -> None:
  """A trial's HParams session (start and end info) and metrics, without an experiment."""
  _, session_start, session_end = tbx_summary.hparams(hparams, metrics)
  for summary in (session_start, session_end):
    writer._writer._get_file_writer().add_summary(summary)  # pylint: disable=protected-access
  writer.scalars(step, metrics)


@pytest.mark.slow
@pytest.mark.parametrize('sessions', ['recorder', 'sessions_only'])
def test_tensorboard_shows_the_swept_keys_as_the_differing_hparams(tmp_path, sessions):
  """A real TensorBoard server over a sweep directory as a sweep leaves it: each trial's HParams
  session as the recorder writes it (or as a session alone) and the sweep's experiment."""
  base = shakespeare.get_config('smoke')
  trials = sweep.make_trials(base, sweep.product(
      sweep.axis('model.hidden_size', [16, 32]), sweep.axis('optim.learning_rate', [1e-3, 3e-3]),
      sweep.fixed('model.cell', 'gru')))
  for i, trial in enumerate(trials):
    writer = metrics_writer.MetricsWriter(tmp_path / trial.name)
    write = writer.hparams if sessions == 'recorder' else functools.partial(_sessions_only, writer)
    write(metrics_writer.flatten_config(json.loads(trial.config.to_json_best_effort())),
          {'final/val_loss': 2.0 + i, 'final/best_val_loss': 1.9 + i}, 40)
    writer.close()
  sweep_hparams.write_experiment(tmp_path, trials)
  sweep_hparams.write_experiment(tmp_path, trials)  # a re-run replaces it
  assert len(list(tmp_path.glob('events.out.tfevents.*'))) == 1
  # A trial's events hold its session only: an experiment of its own would compete with the
  # sweep's (TensorBoard shows one of them at random).
  assert '_hparams_/experiment' not in _hparams(tmp_path / trials[0].name)[1].PluginTagToContent(
      'hparams')

  with _tensorboard(tmp_path) as ask:
    experiment = ask('/data/plugin/hparams/experiment', {'experimentName': ''},
                     lambda a: 0 < len(a.get('hparamInfos', [])) < 51)  # not computed from runs
    differs = {h['name']: h.get('differs', False) for h in experiment['hparamInfos']}
    assert [k for k, d in differs.items() if d] == ['model.hidden_size', 'optim.learning_rate']
    assert not differs['model.cell'] and 'model.num_layers' in differs  # set, and a constant
    assert len(differs) < 15  # not every config key (51)
    domain = {h['name']: h.get('domainDiscrete') for h in experiment['hparamInfos']}
    assert domain['model.hidden_size'] == [16, 32]
    assert [m['name']['tag'] for m in experiment['metricInfos']] == list(
        sweep_hparams.FINAL_METRICS)

    groups = ask('/data/plugin/hparams/session_groups', {
        'experimentName': '', 'startIndex': 0, 'sliceSize': 100,
        'allowedStatuses': ['STATUS_UNKNOWN', 'STATUS_SUCCESS', 'STATUS_FAILURE',
                            'STATUS_RUNNING'],
        'colParams': [{'hparam': 'model.hidden_size'}, {'hparam': 'optim.learning_rate'},
                      {'metric': {'tag': 'final/val_loss', 'group': ''}}]},
        lambda a: len(a.get('sessionGroups', [])) == len(trials))
  sessions = {g['name']: g for g in groups['sessionGroups']}
  assert set(sessions) == {t.name for t in trials}
  for i, trial in enumerate(trials):
    group = sessions[trial.name]
    assert group['hparams']['model.hidden_size'] == trial.config.model.hidden_size
    (value,) = [m['value'] for m in group['metricValues'] if m['name']['tag'] == 'final/val_loss']
    assert value == pytest.approx(2.0 + i)


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


@pytest.mark.slow
@pytest.mark.parametrize('fused', [False, True], ids=['separate', 'fused'])
def test_sigterm_to_a_sweep_checkpoints_its_trials_and_the_rerun_finishes(
    text_file, tmp_path, fused):
  config = write_sweep_config(tmp_path, text_file, "sweep.axis('seed', [0, 1])")
  sweep_dir = tmp_path / 'sweep'
  args = ['--config', config, '--sweep', '--workdir', sweep_dir, '--parallel', '2',
          *(['--fused'] if fused else []), *LONG_RUN]
  process = start_command(*args)
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

  again = run_command(*args, timeout=600)
  assert again.returncode == 0, again.stderr[-2000:]
  for name in status:
    assert json.loads((sweep_dir / name / 'results.json').read_text())['steps'] == 3000
    log = (logs / f'{"fused-0" if fused else name}.log').read_text()
    assert f'resuming at step {stopped_at[name]}' in log
