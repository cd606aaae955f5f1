"""`python -m seqlab.bench` runs end to end on a tiny shape and reports what it promises."""

import importlib.util
import json
import os
import subprocess
import sys

from conftest import ROOT


def test_bench_reports_training_sampling_and_the_torch_peer(tmp_path):
  out = tmp_path / 'bench.json'
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  result = subprocess.run(
      [sys.executable, '-m', 'seqlab.bench', '--train', 'lstm:smoke,gru:smoke', '--sample', 'smoke',
       '--sample_batches', '1', '--steps', '2', '--cpu_devices', '1,2', '--out', str(out)],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  report = json.loads(out.read_text())
  assert report['matmul_gflops'] > 0 and report['machine']['cpu_count'] >= 1
  lstm, lstm_2, gru, gru_2 = report['train']  # each on 1 CPU device, then split over 2
  assert (lstm['cell'], gru['cell'], lstm['batch'], lstm['seq_len']) == ('lstm', 'gru', 16, 32)
  assert [r['devices'] for r in report['train']] == [1, 2, 1, 2]
  assert [r['seqlab']['devices'] for r in report['train']] == [1, 2, 1, 2]
  assert lstm_2['seqlab']['num_params'] == lstm['seqlab']['num_params']
  for row in (lstm, lstm_2, gru, gru_2):
    ours = row['seqlab']
    assert ours['chars_per_sec'] == 16 * 32 / ours['step_s']
    assert row['gflops'] == 6 * ours['num_params'] * ours['chars_per_sec'] / 1e9
    assert ours['compile_s'] > 0 and ours['peak_rss_mib'] > 50
    if importlib.util.find_spec('torch'):
      assert row['vs_torch'] == ours['chars_per_sec'] / row['torch']['chars_per_sec']
      tuned = row['torch_malloc_tuned']  # PyTorch again, under seqlab's malloc settings
      assert row['vs_torch_malloc_tuned'] == ours['chars_per_sec'] / tuned['chars_per_sec']
      assert tuned['num_params'] == row['torch']['num_params']
    else:
      assert 'torch is not installed' in row['torch']['missing']
  assert lstm['seqlab']['num_params'] > gru['seqlab']['num_params']  # 4 gate blocks vs 3
  (sample,) = report['sample']
  assert sample['batch'] == 1 and sample['chars_per_sec'] > 0
  assert '| smoke | 2x32 lstm | 16 x 32 | 2 |' in result.stdout
