"""Configs and the command line: every config loads, variants apply, errors are one clear line."""

import json
import pathlib

import pytest

from conftest import ROOT, run_command
from configs import shakespeare
from seqlab.models import registry
from seqlab import command

CONFIG_FILES = sorted((ROOT / 'configs').glob('*.py'))


@pytest.mark.parametrize('path', CONFIG_FILES, ids=lambda p: p.name)
def test_every_config_and_variant_loads(path):
  namespace = {}
  exec(compile(path.read_text(), str(path), 'exec'), namespace)  # as config_flags loads it
  configs = {}
  for arg in [None, *namespace.get('VARIANTS', {})]:
    try:
      configs[arg] = namespace['get_config'](arg)
    except ValueError as e:  # configs/zoo.py names a model first; `smoke` only modifies one
      assert path.name == 'zoo.py' and arg in (None, 'smoke'), (arg, e)
      assert 'needs a model first' in str(e)
  assert configs
  for arg, config in configs.items():
    for field in ('data.path', 'data.batch_size', 'data.seq_len', 'model.name', 'model.dropout',
                  'seed'):
      node = config
      for part in field.split('.'):
        node = node[part] if part in node else pytest.fail(f'{path.name}:{arg} lacks {field}')
    registry.config_of(config.model, vocab_size=65)  # the model group names one model, whole
  assert len({c.to_json() for c in configs.values()}) == len(configs)  # each variant changes it


def test_variants_apply_and_unknown_ones_fail():
  base, smoke, cpu = (shakespeare.get_config(a) for a in (None, 'smoke', 'cpu'))
  assert (base.model.num_layers, base.model.hidden_size, base.model.dropout) == (3, 512, 0.5)
  assert smoke.train.num_steps < 100 and smoke.model.hidden_size < base.model.hidden_size
  assert (cpu.model.num_layers, cpu.model.hidden_size) == (2, 256)
  both = shakespeare.get_config('cpu,smoke')
  assert both.model.hidden_size == smoke.model.hidden_size and both.optim.learning_rate == 5e-3
  with pytest.raises(ValueError, match="unknown variant 'huge'"):
    shakespeare.get_config('huge')


@pytest.mark.slow
def test_smoke_run_end_to_end_and_resume(tmp_path):
  workdir = tmp_path / 'smoke'
  first = run_command('--config', 'configs/shakespeare.py:smoke', '--workdir', workdir,
                      '--config.model.cell=gru', '--config.model.hidden_size=24')
  assert first.returncode == 0, first.stderr[-2000:]
  for text in ('step 40/40', 'val loss', 'bits/char', f'tensorboard --logdir {workdir}'):
    assert text in first.stdout, text
  results = json.loads((workdir / 'results.json').read_text())
  saved = json.loads((workdir / 'config.json').read_text())
  assert saved['model']['cell'] == 'gru' and saved['model']['hidden_size'] == 24
  assert results['steps'] == 40 and 0 < results['val_loss'] < 4.2 and results['test_loss'] > 0
  again = run_command('--config', 'configs/shakespeare.py:smoke', '--workdir', workdir,
                      '--config.model.cell=gru', '--config.model.hidden_size=24')
  assert again.returncode == 0 and 'resuming at step 40' in again.stdout
  assert json.loads((workdir / 'results.json').read_text())['val_loss'] == pytest.approx(
      results['val_loss'], rel=1e-6)


def test_default_workdir_is_named_after_the_config(tmp_path):
  name = command.default_workdir('configs/shakespeare.py:cpu,smoke')
  assert name.parent == pathlib.Path('runs') and name.name.startswith('shakespeare-cpu-smoke-')


@pytest.mark.slow
@pytest.mark.parametrize('args,message', [
    (['--config.data.path=/no/such/file.txt'], 'data file /no/such/file.txt does not exist'),
    (['--config.data.path={tmp}'], 'is a directory'),
    (['--config.data.path={empty}'], 'is empty'),
    (['--config.data.path={short}'], 'fewer than one batch'),
    (['--config.model.cell=transformer'], "unknown model.cell 'transformer'"),
    (['--config.optim.name=sgd'], "unknown optim.name 'sgd'"),
    (['--config.model.hidden_size=abc'], 'flag --config.model.hidden_size=abc: invalid literal'),
    (['--config.model.hiden_size=3'], 'Did you mean "hidden_size" instead of "hiden_size"?'),
])
def test_bad_input_is_one_clear_line_and_writes_nothing(tmp_path, args, message):
  (tmp_path / 'empty.txt').write_text('')
  (tmp_path / 'short.txt').write_text('too short for a batch\n' * 3)
  args = [a.format(tmp=tmp_path, empty=tmp_path / 'empty.txt', short=tmp_path / 'short.txt')
          for a in args]
  workdir = tmp_path / 'run'
  result = run_command('--config', 'configs/shakespeare.py:smoke', '--workdir', workdir, *args)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith('error: ')
  assert message in result.stderr and 'Traceback' not in result.stderr
  assert not workdir.exists()


@pytest.mark.slow
def test_a_workdir_that_is_a_file_is_one_clear_line(tmp_path):
  (tmp_path / 'file').write_text('x')
  result = run_command('--config', 'configs/shakespeare.py:smoke', '--workdir', tmp_path / 'file')
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: --workdir {tmp_path / "file"} is a file, not a run directory; use another path')
