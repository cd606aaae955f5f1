"""`python -m seqlab.bench` runs end to end on a tiny shape and reports what it promises."""

import importlib.util
import json

import pytest

from conftest import run_command

pytestmark = pytest.mark.slow  # one subprocess per measurement, ~1-2 minutes in all

# The smoke shape (seqlab/bench/main.py SHAPES): 2 layers of 32 units, batches of 16 x 32; the
# bench's models read tiny Shakespeare's 65 symbols.
V, H = 65, 32


def _seqlab_params(gates: int, extra_bias: int) -> int:
  """seqlab's model counted by hand: per layer `gates` blocks of (input + recurrent) weights and
  one bias (plus GRU's `extra_bias` recurrent bias of H); one-hot input; a dense decoder."""
  layer_0 = gates * H * (V + H + 1) + extra_bias
  layer_1 = gates * H * (H + H + 1) + extra_bias
  return layer_0 + layer_1 + (H + 1) * V


def _torch_params(gates: int) -> int:
  """The PyTorch peer counted by hand: the same network, with an Embedding(V, V) standing in
  for the one-hot input and PyTorch's two bias vectors per gate."""
  return V * V + gates * H * (V + H + 2) + gates * H * (H + H + 2) + (H + 1) * V


def test_bench_reports_training_sampling_and_the_torch_peer(tmp_path):
  out = tmp_path / 'bench.json'
  result = run_command('--train', 'lstm:smoke,gru:smoke', '--sample', 'smoke',
                       '--sample_batches', '1', '--steps', '2', '--cpu_devices', '1,2',
                       '--out', out, module='seqlab.bench', timeout=600)
  assert result.returncode == 0, result.stderr
  report = json.loads(out.read_text())
  ceiling = report['matmul_gflops']  # GFLOP/s of a 2048^3 matmul on this machine, all cores
  assert ceiling > 0 and report['machine']['cpu_count'] >= 1
  lstm, lstm_2, gru, gru_2 = report['train']  # each on 1 CPU device, then split over 2
  assert (lstm['cell'], gru['cell'], lstm['batch'], lstm['seq_len']) == ('lstm', 'gru', 16, 32)
  assert [r['devices'] for r in report['train']] == [1, 2, 1, 2]
  assert [r['seqlab']['devices'] for r in report['train']] == [1, 2, 1, 2]
  expected = {'lstm': _seqlab_params(4, 0), 'gru': _seqlab_params(3, H)}
  assert expected == {'lstm': 23_009, 'gru': 17_857}
  for row in (lstm, lstm_2, gru, gru_2):
    ours = row['seqlab']
    assert ours['num_params'] == expected[row['cell']]  # the model it says it trains
    assert 0 < ours['step_s'] < ours['compile_s']  # a smoke step is far quicker than compiling it
    # Physically possible: ~6 FLOPs per parameter per character (forward and backward) cannot
    # run much faster than the machine's measured matmul ceiling.
    assert 0 < 6 * ours['num_params'] * ours['chars_per_sec'] < 3 * ceiling * 1e9
    assert 0 < row['gflops'] < 3 * ceiling
    assert ours['peak_rss_mib'] > 50
    if importlib.util.find_spec('torch'):
      gates = 4 if row['cell'] == 'lstm' else 3
      for peer in (row['torch'], row['torch_malloc_tuned']):  # glibc's malloc, then seqlab's
        assert peer['num_params'] == _torch_params(gates)
        assert peer['step_s'] > 0 and peer['chars_per_sec'] > 0
      assert row['vs_torch'] > 0 and row['vs_torch_malloc_tuned'] > 0
    else:
      assert 'torch is not installed' in row['torch']['missing']
  (sample,) = report['sample']
  assert sample['batch'] == 1 and sample['chars_per_sec'] > 0 and sample['first_call_s'] > 0
  for cell in ('lstm', 'gru'):
    for devices in (1, 2):
      assert f'| smoke | 2x32 {cell} | 16 x 32 | {devices} |' in result.stdout
