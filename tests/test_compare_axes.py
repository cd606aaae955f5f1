"""`python -m seqlab.compare --x step|time|flops`, the protocol columns and the by-position picture.

The runs are built by hand, as seqlab writes them (config.json, results.json, TensorBoard
scalars through tensorboardX's SummaryWriter, as seqlab.run.metrics_writer does): "new" runs
with the evaluation protocols' results and the `val/train_seconds` / `val/train_flops` tags,
"old" runs with neither. Nothing trains here.
"""

import csv
import json
import math

import pytest
import tensorboardX

from conftest import run_command
from configs import shakespeare
from seqlab.analysis import compare
from seqlab.analysis import curves as run_curves
from seqlab.errors import SeqlabError

BATCH, SEQ_LEN, FLOPS_PER_CHAR = 16, 32, 1000  # the smoke config's batch; a made-up count


def _new_results(best, window=8, by_position=True):
  results = {'best_val_loss': best, 'best_step': 40, 'val_loss': best, 'val_bpc': 1.0,
             'steps': 40, 'num_params': 5000, 'eval_protocol': 'stream', 'eval_window': window,
             'val_loss_stream': best, 'val_loss_windows': best + 0.25,
             'val_loss_windows_stderr': 0.0125, 'test_loss_stream': None,
             'test_loss_windows': None, 'test_loss_windows_stderr': None,
             'train_time': 90.0, 'flops_per_char': FLOPS_PER_CHAR}
  if by_position:
    results['val_loss_by_position'] = [3.0 - 0.25 * i for i in range(window)]
  return results


def _run(path, *, new=True, best=2.0, curve=((20, 2.5), (40, 2.0)), seconds=None,
         protocol='stream', results=None):
  """A finished run directory. `new`: the protocols' config fields, results and tags, with
  `seconds` {step: cumulative training seconds} (default 1.5 s a step)."""
  path.mkdir(parents=True)
  config = json.loads(shakespeare.get_config('smoke').to_json_best_effort())
  for field in ('protocol', 'window', 'both_protocols'):  # whatever today's config has
    config['eval'].pop(field, None)
  if new:
    config['eval'].update(protocol=protocol, window=8, both_protocols=True)
  (path / 'config.json').write_text(json.dumps(config))
  if results is None:
    results = _new_results(best) if new else {'best_val_loss': best, 'best_step': 40,
                                              'val_loss': best, 'val_bpc': 1.0, 'steps': 40,
                                              'num_params': 5000}
  (path / 'results.json').write_text(json.dumps(results))
  if seconds is None:
    seconds = {step: 1.5 * step for step, _ in curve}
  with tensorboardX.SummaryWriter(str(path)) as writer:
    for step, loss in curve:
      writer.add_scalar('val/loss', loss, step)
      writer.add_scalar('val/bpc', loss / 0.693, step)
      if new:
        writer.add_scalar('val/loss_stream', loss, step)
        writer.add_scalar('val/loss_windows', loss + 0.25, step)
        if step in seconds:
          writer.add_scalar('val/train_seconds', seconds[step], step)
        writer.add_scalar('val/train_flops', step * BATCH * SEQ_LEN * FLOPS_PER_CHAR, step)
  return path


def _csv(path):
  with open(path, encoding='utf-8') as f:
    return list(csv.DictReader(f))


def test_the_x_values_are_steps_training_minutes_or_training_flops(tmp_path):
  run = _run(tmp_path / 'a', curve=[(20, 2.5), (40, 2.0), (60, 1.75)],
             seconds={20: 30.0, 40: 90.0, 60: 150.0})
  assert run_curves.axis_curves(run, 'step') == ({'a': [(20, 2.5), (40, 2.0), (60, 1.75)]}, [])
  assert run_curves.axis_curves(run, 'time') == ({'a': [(0.5, 2.5), (1.5, 2.0), (2.5, 1.75)]}, [])
  flops, missing = run_curves.axis_curves(run, 'flops')
  assert missing == [] and flops['a'] == [
      (pytest.approx(s * BATCH * SEQ_LEN * FLOPS_PER_CHAR, rel=1e-6), loss)
      for s, loss in [(20, 2.5), (40, 2.0), (60, 1.75)]]
  assert run_curves.val_curves(run) == {'a': [(20, 2.5), (40, 2.0), (60, 1.75)]}  # as before
  with pytest.raises(SeqlabError, match='--x minutes'):
    run_curves.axis_curves(run, 'minutes')


def test_time_is_matched_to_the_val_loss_by_step(tmp_path):
  # A val loss whose step has no training time (written out of order, or lost) is dropped,
  # never paired with another step's time.
  run = _run(tmp_path / 'a', curve=[(20, 2.5), (40, 2.0), (60, 1.75)],
             seconds={20: 30.0, 60: 150.0})
  assert run_curves.axis_curves(run, 'time')[0] == {'a': [(0.5, 2.5), (2.5, 1.75)]}


def test_a_run_without_the_tag_is_left_out_with_one_note(tmp_path):
  new = _run(tmp_path / 'runs' / 'new', best=1.5)
  old = _run(tmp_path / 'runs' / 'old', new=False, best=1.8)
  notes = []
  table = compare.compare(tmp_path / 'runs', x='time', note=notes.append)
  assert len(notes) == 1 and notes[0].startswith('note: --x time: 1 run(s) without '
                                                 'val/train_seconds')
  assert notes[0].endswith(': old')
  assert (tmp_path / 'runs' / 'compare_val_loss_time.png').read_bytes().startswith(b'\x89PNG')
  assert not (tmp_path / 'runs' / 'compare_val_loss.png').exists()  # --x step's picture
  assert [line.split(' | ')[0] for line in table.splitlines()[2:]] == ['| new', '| old']
  curves, missing = run_curves.axis_curves([new, old], 'flops')
  assert list(curves) == ['new'] and missing == ['old']
  # The step axis has every run, and no note.
  notes.clear()
  compare.compare([new, old], out=tmp_path / 'out', note=notes.append)
  assert notes == [] and sorted(run_curves.axis_curves([new, old])[0]) == ['new', 'old']


def test_no_run_with_the_tag_is_one_error_and_writes_nothing(tmp_path):
  old = [_run(tmp_path / 'runs' / name, new=False) for name in ('a', 'b')]
  for x, tag in (('time', 'val/train_seconds'), ('flops', 'val/train_flops')):
    with pytest.raises(SeqlabError, match=f'--x {x}: no run has {tag}'):
      compare.compare(old, out=tmp_path / 'out', x=x)
  assert not (tmp_path / 'out').exists()
  # A run that never evaluated (no val/loss) lacks no tag: it has no curve at all.
  (tmp_path / 'fresh').mkdir()
  (tmp_path / 'fresh' / 'config.json').write_text((old[0] / 'config.json').read_text())
  assert run_curves.axis_curves([tmp_path / 'fresh'], 'time') == ({}, [])


def test_the_protocol_columns_appear_when_present(tmp_path):
  _run(tmp_path / 'runs' / 'new', best=1.5)
  _run(tmp_path / 'runs' / 'old', new=False, best=1.8)
  table = compare.compare(tmp_path / 'runs', note=lambda _: None)
  rows = _csv(tmp_path / 'runs' / 'compare.csv')
  columns = list(rows[0])
  # eval.protocol and eval.window differ (the old run has neither): config columns, so the
  # results' eval_protocol / eval_window are not repeated.
  assert columns == ['trial', 'status', 'eval.protocol', 'eval.window', 'eval.both_protocols',
                     *compare.METRICS,
                     'val_loss_stream', 'val_loss_windows', 'val_loss_windows_stderr',
                     'train_time', 'flops_per_char']
  new, old = rows
  assert (new['trial'], new['val_loss_stream'], new['val_loss_windows'],
          new['val_loss_windows_stderr'], new['train_time'], new['flops_per_char']) == (
              'new', '1.5', '1.75', '0.0125', '90.0', str(FLOPS_PER_CHAR))
  assert old['trial'] == 'old' and all(old[c] == '' for c in columns[-5:])  # blank, not 0
  header, _, first, second = table.splitlines()
  assert 'val_loss_windows (± stderr)' in header and 'val_loss_windows_stderr' not in header
  assert '| 1.5 | 1.75 ± 0.013 | 90 | 1,000 |' in first
  assert second.endswith('| - | - | - | - |')


def test_runs_of_one_protocol_get_the_results_protocol_columns(tmp_path):
  for name, best in (('a', 1.5), ('b', 1.6)):
    _run(tmp_path / 'runs' / name, best=best)
  columns, rows = compare.table_rows(tmp_path / 'runs')
  assert columns[-7:] == list(compare.OPTIONAL_METRICS)
  assert [(r['eval_protocol'], r['eval_window']) for r in rows] == [('stream', 8)] * 2


def test_old_runs_keep_the_old_columns(tmp_path):
  _run(tmp_path / 'runs' / 'a', new=False)
  columns, _ = compare.table_rows(tmp_path / 'runs')
  assert columns == ['trial', 'status', *compare.METRICS]


def test_the_picture_says_which_protocol_val_loss_is(tmp_path):
  stream = _run(tmp_path / 'stream', protocol='stream')
  windows = _run(tmp_path / 'windows', protocol='windows')
  old = _run(tmp_path / 'old', new=False)
  protocol_of = run_curves.protocols([stream, windows, old])
  assert protocol_of == {'stream': 'stream', 'windows': 'windows', 'old': None}
  assert run_curves.picture_title(protocol_of, ['stream']) == ('val/loss: stream protocol', False)
  title, per_curve = run_curves.picture_title(protocol_of, ['stream', 'windows'])
  assert per_curve and 'own protocol' in title  # each curve's label names its protocol
  assert 'not recorded' in run_curves.picture_title(protocol_of, ['old'])[0]


def test_the_by_position_picture_only_when_runs_have_the_data(tmp_path):
  with_data = _run(tmp_path / 'runs' / 'a', best=1.5)
  without = _run(tmp_path / 'runs' / 'b', results=_new_results(1.6, by_position=False))
  old = _run(tmp_path / 'runs' / 'c', new=False)
  curves = run_curves.by_position_curves([with_data, without, old])
  assert curves == {'a': [3.0, 2.75, 2.5, 2.25, 2.0, 1.75, 1.5, 1.25]}
  compare.compare([with_data, without, old], out=tmp_path / 'out1', note=lambda _: None)
  png = tmp_path / 'out1' / run_curves.BY_POSITION_FILENAME
  assert png.read_bytes().startswith(b'\x89PNG')
  compare.compare([without, old], out=tmp_path / 'out2')
  assert (tmp_path / 'out2' / 'compare.csv').exists()
  assert not (tmp_path / 'out2' / run_curves.BY_POSITION_FILENAME).exists()
  # A split shorter than the window leaves the positions it never reaches null.
  short = _new_results(1.7)
  short['val_loss_by_position'][5:] = [None] * 3
  short_run = _run(tmp_path / 'runs' / 'short', results=short)
  (curve,) = run_curves.by_position_curves(short_run).values()
  assert curve[:5] == [3.0, 2.75, 2.5, 2.25, 2.0] and all(math.isnan(v) for v in curve[5:])
  compare.compare(short_run, out=tmp_path / 'out3')
  assert (tmp_path / 'out3' / run_curves.BY_POSITION_FILENAME).exists()


def _command(*args, cwd):
  return run_command(*args, module='seqlab.compare', cwd=cwd, timeout=120)


@pytest.mark.slow
def test_the_command_takes_x_and_says_what_it_left_out(tmp_path):
  new = _run(tmp_path / 'runs' / 'new', best=1.5)
  old = _run(tmp_path / 'runs' / 'old', new=False, best=1.8)
  done = _command(new, old, '--x', 'time', '--out', tmp_path / 'out', cwd=tmp_path)
  assert done.returncode == 0, done.stderr[-2000:]
  notes = [line for line in done.stderr.splitlines() if line.startswith('note:')]
  assert len(notes) == 1 and notes[0].endswith(': old')
  assert (f'wrote {tmp_path / "out" / "compare.csv"}, '
          f'{tmp_path / "out" / "compare_val_loss_time.png"} and '
          f'{tmp_path / "out" / "compare_by_position.png"}') in done.stderr
  bad = _command(old, '--x', 'flops', '--out', tmp_path / 'out2', cwd=tmp_path)
  errors = [line for line in bad.stderr.splitlines() if line.startswith('error:')]
  assert bad.returncode == 2 and len(errors) == 1 and 'val/train_flops' in errors[0]
  assert not (tmp_path / 'out2').exists()
  assert _command(new, '--x', 'minutes', cwd=tmp_path).returncode != 0  # not an axis: usage
