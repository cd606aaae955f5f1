"""A model defined outside the package (tests/outside_model/ema_lm.py, copied with its config
into a researcher's folder outside the repository) through the public commands: it trains and
evaluates, config.json names its file, a fresh process samples, scores and resumes the run, a
sweep's trials (alone and fused) find it while the sweep's own process imports neither it nor
JAX, and a run whose model file is gone is one `error:` line naming it. In this process: a
declaration that lacks a field, or a name registered by two files, is one SeqlabError.
"""

import concurrent.futures
import json
import math
import pathlib
import re
import shutil
import signal
import sys
import textwrap

from ml_collections import config_dict
import pytest

from configs import shakespeare
from conftest import ROOT, run_command, scalars, start_command, write_corpus
from seqlab import train
from seqlab.errors import SeqlabError
from seqlab.models import registry
from seqlab.models.declaration import REQUIRED

SOURCE = pathlib.Path(__file__).parent / 'outside_model'
FILES = ('ema_lm.py', 'ema_config.py')
# The config file's smoke run, smaller and shorter; on one CPU device (the runs compared).
OVERRIDES = {'data.test_fraction': 0.0, 'data.batch_size': 4, 'data.seq_len': 16,
             'model.hidden_size': 16, 'model.scan': 'sequential', 'train.num_steps': 100,
             'eval.every_steps': 50, 'log.checkpoint_every_steps': 50, 'log.every_steps': 10,
             'eval.num_streams': 4, 'eval.seq_len': 32, 'eval.window': 32,
             'log.sample_steps': '()', 'log.sample_every_steps': 1000, 'log.sample_length': 20,
             'log.novelty_num_samples': 0, 'parallel.cpu_devices': 1}


def _args(folder, *more, **overrides):
  """launch.py's arguments: the researcher's config on their corpus, with OVERRIDES."""
  values = {'data.path': folder / 'corpus.txt', **OVERRIDES, **overrides}
  return ['--config', folder / 'ema_config.py', *(f'--config.{k}={v}' for k, v in values.items()),
          *more]


def _at_once(*calls):
  """run_command(*args, **kwargs) of each (args, kwargs), all at the same time; the results."""
  with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
    return [f.result() for f in [pool.submit(run_command, *a, **k) for a, k in calls]]


def _launch(folder, *args, **kwargs):
  """`python launch.py ARGS` run from the researcher's folder."""
  return run_command(*args, cwd=folder, **kwargs)


def _log_vocab(run) -> float:
  """The loss of knowing nothing: log of the run's vocabulary size."""
  return math.log(len(json.loads((run / 'vocab.json').read_text())['symbols']))


def _one_error(result, *names) -> str:
  """The one `error:` line of a failed command (exit status 2), which names `names`."""
  assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  (line,) = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  for name in names:
    assert str(name) in line, line
  return line


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  """A researcher's folder outside the repository: the model file, its config, a corpus."""
  path = tmp_path_factory.mktemp('researcher')
  for name in FILES:
    shutil.copy(SOURCE / name, path / name)
  write_corpus(path / 'corpus.txt')
  return path


@pytest.fixture(scope='module')
def trained(folder):
  """The config's run, trained and evaluated by `launch.py` (an uninterrupted run)."""
  result = _launch(folder, *_args(folder, f'--workdir={folder / "run"}'))
  assert result.returncode == 0, result.stderr[-3000:]
  return folder / 'run', result


# --- Through the public commands.

@pytest.mark.slow
def test_it_trains_and_evaluates_and_config_json_names_its_file(folder, trained):
  run, result = trained
  assert 'seqlab: 2x16 ema (sequential scan)' in result.stdout
  results = json.loads((run / 'results.json').read_text())
  assert scalars(run, 'train/loss')[0][1] > 0.9 * _log_vocab(run)  # it starts knowing nothing
  assert results['val_loss'] < 0.5 * _log_vocab(run)  # ... and learns
  assert results['steps'] == 100 and results['val_loss_windows'] < 0.5 * _log_vocab(run)
  model = json.loads((run / 'config.json').read_text())['model']
  assert model == {'name': 'ema', 'module': str(folder / 'ema_lm.py'), 'num_layers': 2,
                   'hidden_size': 16, 'dropout': 0.0, 'scan': 'sequential',
                   'matmul_dtype': 'float32'}


@pytest.mark.slow
def test_a_fresh_process_samples_and_scores_the_run(trained):
  run, _ = trained
  args = ('--workdir', run, '--prime', 'ANNA:', '--length', '40', '--seed', '3')
  first, second, scores = _at_once(
      (args, {'module': 'seqlab.sample'}), (args, {'module': 'seqlab.sample'}),
      (('--workdir', run, '--json', run.parent / 'scores.json'), {'module': 'seqlab.score'}))
  assert first.returncode == 0, first.stderr[-3000:]
  assert first.stdout == second.stdout and first.stdout.startswith('ANNA:')
  assert len(first.stdout.rstrip('\n')) >= len('ANNA:') + 40
  assert '2x16 ema (sequential scan)' in first.stderr

  assert scores.returncode == 0, scores.stderr[-3000:]
  assert '| stream |' in scores.stdout and '| windows of 32 |' in scores.stdout
  scored = json.loads((run.parent / 'scores.json').read_text())
  results = json.loads((run / 'results.json').read_text())
  assert scored['step'] == results['best_step'] == results['steps']  # the best is the last
  assert scored['stream']['loss'] == pytest.approx(results['best_val_loss'], rel=1e-5)
  assert scored['windows']['loss'] == pytest.approx(results['val_loss_windows'], rel=1e-5)


@pytest.mark.slow
def test_an_interrupted_run_resumes_in_a_fresh_process_as_if_never_stopped(folder, trained):
  workdir = folder / 'split'
  proc = start_command(*_args(folder, f'--workdir={workdir}'), cwd=folder)
  for line in proc.stdout:  # stopped mid-run, before its first evaluation and checkpoint
    if line.startswith('step 10/'):
      proc.send_signal(signal.SIGTERM)
      break
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
  (stopped,) = [l for l in err.splitlines() if 'stopped after step' in l]
  step = int(stopped.split('stopped after step ')[1].split()[0])
  assert 10 <= step < 100

  resumed = _launch(folder, *_args(folder, f'--workdir={workdir}'))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'resuming at step {step}' in resumed.stdout
  whole = json.loads((trained[0] / 'results.json').read_text())
  results = json.loads((workdir / 'results.json').read_text())
  for key in ('val_loss', 'best_val_loss', 'best_step', 'steps', 'val_loss_windows'):
    assert results[key] == whole[key], key


def _sweep_call(folder, sweep_dir, *more):
  """The args of `python -c CODE`: `launch.py --sweep` in a process that reports whether it
  imported JAX or the model, and its exit status."""
  code = textwrap.dedent(f'''
      import runpy, sys
      sys.path.insert(0, {str(ROOT)!r})  # as `python launch.py` has: configs/ imports
      sys.argv = ['launch.py', *{[str(a) for a in _args(folder, '--sweep', *more)]!r},
                  '--workdir', {str(sweep_dir)!r}]
      try:
        runpy.run_path({str(ROOT / 'launch.py')!r}, run_name='__main__')
      except SystemExit as e:
        status = e.code
      model = [m for m in sys.modules.values()
               if getattr(m, '__file__', None) == {str(folder / 'ema_lm.py')!r}]
      print('LOADED', [m for m in ('jax', 'flax', 'optax', 'orbax') if m in sys.modules],
            len(model), status)
  ''')
  return (), {'code': code, 'cwd': folder, 'timeout': 600}


@pytest.mark.slow
def test_a_sweep_runs_its_trials_alone_and_fused_and_its_process_imports_no_model(
    folder, tmp_path):
  names = ['learning_rate=0.005', 'learning_rate=0.01']
  ways = {'separate': ['--parallel=2'], 'fused': ['--fused']}
  done = _at_once(*(_sweep_call(folder, tmp_path / way, *flags) for way, flags in ways.items()))
  for way, result in zip(ways, done):
    sweep_dir = tmp_path / way
    (line,) = [l for l in result.stdout.splitlines() if l.startswith('LOADED ')]
    assert line == 'LOADED [] 0 0', (way, line, result.stderr[-3000:])
    status = json.loads((sweep_dir / 'sweep.json').read_text())['trials']
    assert {n: status[n]['status'] for n in names} == dict.fromkeys(names, 'done'), way
    losses = []
    for name in names:
      config = json.loads((sweep_dir / name / 'config.json').read_text())
      assert config['model']['module'] == str(folder / 'ema_lm.py'), way
      losses.append(json.loads((sweep_dir / name / 'results.json').read_text())['val_loss'])
    assert losses[0] != losses[1] and max(losses) < 0.5 * _log_vocab(sweep_dir / name), losses
  log = (tmp_path / 'fused' / 'logs' / 'fused-0.log').read_text()
  assert 'fused: 2 trials of 2x16 ema (sequential scan)' in log, log[-3000:]


@pytest.mark.slow
def test_a_run_whose_model_file_is_gone_is_one_error_naming_it(folder, trained):
  run, _ = trained
  model_file, away = folder / 'ema_lm.py', folder.parent / 'ema_lm.py.moved'
  model_file.rename(away)
  try:
    sampled, resumed = _at_once((('--workdir', run), {'module': 'seqlab.sample'}),
                                (_args(folder, f'--workdir={run}'), {'cwd': folder}))
  finally:
    away.rename(model_file)
  for result in (sampled, resumed):
    _one_error(result, f"model.module '{model_file}': no such file")


# --- In this process (the fast tier): the registry's checks of an outside declaration.

@pytest.fixture
def own_registry(monkeypatch):
  """The registry as it is, given back after the test: what it registers is forgotten."""
  registry.names()  # the package's models, found once
  # pylint: disable=protected-access
  monkeypatch.setattr(registry, '_MODELS', dict(registry._MODELS))
  monkeypatch.setattr(registry, '_BY_CONFIG', dict(registry._BY_CONFIG))
  before = set(sys.modules)
  yield
  for name in set(sys.modules) - before:
    if name.startswith('seqlab_model_'):
      del sys.modules[name]


def _model_file(folder: pathlib.Path, change=None) -> pathlib.Path:
  """ema_lm.py copied into `folder`, with `change` (old, new) applied to its text."""
  folder.mkdir(parents=True, exist_ok=True)
  text = (SOURCE / 'ema_lm.py').read_text()
  if change:
    assert change[0] in text
    text = text.replace(*change)
  (folder / 'ema_lm.py').write_text(text)
  return folder / 'ema_lm.py'


def test_config_json_names_the_model_file_by_its_absolute_path(own_registry, tmp_path,
                                                                monkeypatch):
  """What train.build writes to config.json: the model's file by its absolute path, for a
  config that names it relative to the working directory, or not at all (a model that its
  process imported itself)."""
  path = _model_file(tmp_path / 'mine')
  monkeypatch.chdir(path.parent)
  config = shakespeare.get_config('smoke')
  config.data.path = str(write_corpus(tmp_path / 'corpus.txt'))
  for given in ({'module': 'ema_lm.py'}, {}):  # the first imports it
    config.model = config_dict.ConfigDict({'name': 'ema', **given})
    setup = train.build(config, tmp_path / 'run')
    assert setup.config_dict['model'] == {'name': 'ema', 'module': str(path)}, given


@pytest.mark.parametrize('field', REQUIRED)
def test_a_declaration_that_lacks_a_required_field_is_one_error_naming_it(
    own_registry, tmp_path, field):
  """ema_lm.py's registry.Model(...) without `field`, imported as a config's model.module."""
  path = _model_file(tmp_path, ('registry.register(registry.Model(',
                                'registry.register(registry.Model(**{k: v for k, v in dict('))
  text = path.read_text()
  assert text.endswith(')}))\n')
  path.write_text(text[:-len(')}))\n')] + f')}}).items() if k != {field!r}}}))\n')
  with pytest.raises(SeqlabError) as caught:
    registry.name_of({'name': 'ema', 'module': str(path)})
  message = str(caught.value)
  assert message.startswith(f'{path}: the model declaration of ') and '\n' not in message
  assert message.split(' lacks ')[1].split(' (')[0] == field
  assert not [m for m in sys.modules.values() if getattr(m, '__file__', None) == str(path)]
  assert 'ema' not in registry.names()


def test_one_name_registered_by_two_files_is_an_error(own_registry, tmp_path):
  first, second = _model_file(tmp_path / 'a'), _model_file(tmp_path / 'b')
  assert registry.name_of({'name': 'ema', 'module': str(first)}) == 'ema'
  assert registry.name_of({'name': 'ema', 'module': str(first)}) == 'ema'  # imported once
  with pytest.raises(SeqlabError, match=re.escape(
      f"model.name 'ema' is registered twice: by {first} and by {second}; rename one")):
    registry.name_of({'name': 'ema', 'module': str(second)})
  assert registry.get('ema').source == str(first)


def test_the_config_file_imports_neither_the_model_nor_jax(folder):
  """What a sweep's own process does with the config file: get_config, get_sweep."""
  code = textwrap.dedent(f'''
      import runpy, sys
      namespace = runpy.run_path({str(folder / 'ema_config.py')!r})
      config = namespace['get_config']()
      assert config.model.module == {str(folder / 'ema_lm.py')!r}, config.model
      assert len(namespace['get_sweep']()) == 2
      print('LOADED', [m for m in ('jax', 'flax', 'numpy') if m in sys.modules]
            + [m for m in sys.modules if m.startswith('seqlab_model_')])
  ''')
  result = run_command(code=code)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'LOADED []' in result.stdout, result.stdout
