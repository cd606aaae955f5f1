"""`python -m seqlab.compare PATH ...`: run directories and folders of them, in any mix.

The runs are built by hand (config.json, results.json, a tiny TensorBoard event file), so
nothing trains here.
"""

import csv
import json
import pathlib

import pytest
import tensorboardX

from conftest import run_command
from configs import shakespeare
from seqlab.analysis import compare
from seqlab.errors import SeqlabError


def _run(path, changes=None, best=None, curve=((20, 2.5),)):
  """A finished run directory (or unfinished, without `best`) with a val-loss curve."""
  path.mkdir(parents=True)
  config = json.loads(shakespeare.get_config('smoke').to_json_best_effort())
  for key, value in (changes or {}).items():
    *groups, field = key.split('.')
    node = config
    for group in groups:
      node = node[group]
    node[field] = value
  (path / 'config.json').write_text(json.dumps(config))
  if best is not None:
    (path / 'results.json').write_text(json.dumps(
        {'best_val_loss': best, 'best_step': 40, 'val_loss': best + 0.01, 'val_bpc': 1.0,
         'steps': 40, 'num_params': 5000}))
  with tensorboardX.SummaryWriter(str(path)) as writer:
    for step, loss in curve:
      writer.add_scalar('val/loss', loss, step)
  return path


def _csv(path):
  with open(path, encoding='utf-8') as f:
    return list(csv.DictReader(f))


def test_one_run_directory_is_compared_and_left_untouched(tmp_path, monkeypatch):
  run = _run(tmp_path / 'runs' / 'shakespeare-smoke-1', best=1.9)
  before = sorted(p.name for p in run.iterdir())
  monkeypatch.chdir(tmp_path)
  table = compare.compare(run)
  assert table.splitlines()[2].startswith('| shakespeare-smoke-1 | done | 1.9 | 40 |')
  assert [(r['trial'], r['status'], r['best_val_loss']) for r in _csv(tmp_path / 'compare.csv')] \
      == [('shakespeare-smoke-1', 'done', '1.9')]
  assert (tmp_path / 'compare_val_loss.png').read_bytes().startswith(b'\x89PNG')
  assert sorted(p.name for p in run.iterdir()) == before  # a run is never written into


def test_two_separate_runs_side_by_side(tmp_path):
  a = _run(tmp_path / 'runs' / 'a', {'model.hidden_size': 64}, best=1.6, curve=[(20, 1.6)])
  b = _run(tmp_path / 'other' / 'b', {'model.hidden_size': 16}, best=2.1, curve=[(20, 2.1)])
  table = compare.compare([b, a], out=tmp_path / 'out')
  assert table.splitlines()[0].startswith('| trial | status | model.hidden_size | best_val_loss |')
  rows = _csv(tmp_path / 'out' / 'compare.csv')
  assert [(r['trial'], r['model.hidden_size'], r['best_val_loss']) for r in rows] == [
      ('a', '64', '1.6'), ('b', '16', '2.1')]  # best first


def test_each_run_is_listed_once_and_clashing_names_are_told_apart(tmp_path):
  for sweep in ('grid1', 'grid2'):
    for seed in (0, 1):
      _run(tmp_path / sweep / f'seed={seed}', {'seed': seed}, best=2.0 + seed + (sweep == 'grid2'))
  single = _run(tmp_path / 'baseline', best=1.0)
  # grid1/seed=0 is given twice: inside grid1 and on its own.
  columns, rows = compare.table_rows([tmp_path / 'grid1', tmp_path / 'grid1' / 'seed=0',
                                      tmp_path / 'grid2', single])
  assert [r['trial'] for r in rows] == ['baseline', 'grid1/seed=0', 'grid1/seed=1',
                                        'grid2/seed=0', 'grid2/seed=1']
  assert 'seed' in columns
  # Names that do not clash stay the folder names.
  _, rows = compare.table_rows([tmp_path / 'grid1' / 'seed=1', single])
  assert [r['trial'] for r in rows] == ['baseline', 'seed=1']


def test_a_sweep_directory_keeps_its_status_key_order_and_default_out(tmp_path):
  sweep = tmp_path / 'sweep'
  _run(sweep / 'lr=0.01,hidden_size=16', {'optim.learning_rate': 0.01, 'model.hidden_size': 16},
       best=1.8)
  _run(sweep / 'lr=0.001,hidden_size=32', {'optim.learning_rate': 0.001,
                                           'model.hidden_size': 32})
  (sweep / 'logs').mkdir()  # not a run: skipped
  (sweep / 'sweep.json').write_text(json.dumps({'trials': {
      'lr=0.01,hidden_size=16': {'status': 'done', 'overrides': {
          'optim.learning_rate': 0.01, 'model.hidden_size': 16}},
      'lr=0.001,hidden_size=32': {'status': 'failed', 'overrides': {
          'optim.learning_rate': 0.001, 'model.hidden_size': 32}}}}))
  compare.compare(sweep)  # `compare SWEEP_DIR` writes into the sweep directory, as it always did
  rows = _csv(sweep / 'compare.csv')
  assert list(rows[0])[:4] == ['trial', 'status', 'optim.learning_rate', 'model.hidden_size']
  assert [(r['trial'], r['status']) for r in rows] == [('lr=0.01,hidden_size=16', 'done'),
                                                      ('lr=0.001,hidden_size=32', 'failed')]
  # A trial given on its own still gets its sweep's status.
  _, rows = compare.table_rows([sweep / 'lr=0.001,hidden_size=32'])
  assert rows[0]['status'] == 'failed'
  assert compare.default_out([sweep]) == sweep
  assert compare.default_out([sweep, tmp_path]) == compare.default_out([sweep / 'x']) \
      == pathlib.Path('.')


def test_paths_that_hold_no_runs_are_one_error(tmp_path):
  (tmp_path / 'empty' / 'sub').mkdir(parents=True)
  with pytest.raises(SeqlabError, match='empty holds no run directories'):
    compare.compare(tmp_path / 'empty')
  with pytest.raises(SeqlabError, match='missing is not a directory'):
    compare.compare([_run(tmp_path / 'a', best=1.0), tmp_path / 'missing'])
  with pytest.raises(SeqlabError, match='at least one'):
    compare.compare([])


def _command(*args, cwd):
  return run_command(*args, module='seqlab.compare', cwd=cwd, timeout=120)


@pytest.mark.slow
def test_the_command_takes_runs_and_sweeps(tmp_path):
  a = _run(tmp_path / 'runs' / 'a', {'model.hidden_size': 64}, best=1.6)
  b = _run(tmp_path / 'runs' / 'b', {'model.hidden_size': 16}, best=2.1)
  done = _command(a, b, '--out', tmp_path / 'out', cwd=tmp_path)
  assert done.returncode == 0, done.stderr[-2000:]
  assert [line.split(' | ')[0] for line in done.stdout.splitlines()[2:4]] == ['| a', '| b']
  assert f'wrote {tmp_path / "out" / "compare.csv"}' in done.stderr
  single = _command(a, cwd=tmp_path)  # used to say it holds no runs
  assert single.returncode == 0 and '| a | done |' in single.stdout
  assert (tmp_path / 'compare.csv').exists()  # default: the current directory
  bad = _command(tmp_path / 'nothing', cwd=tmp_path)
  assert bad.returncode == 2 and bad.stderr.strip().startswith('error: ')
  assert _command(cwd=tmp_path).returncode != 0  # no PATH: usage
