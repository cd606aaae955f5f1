"""`python -m seqlab.bench` runs end to end on a tiny shape and reports what it promises; the
zoo rows' FLOP count matches a hand count, and a tiny zoo row runs through the worker."""

import importlib.util
import json

import jax
import pytest

from conftest import run_command
from configs import zoo as zoo_configs
from seqlab.models import flops
from seqlab.bench import worker
from seqlab.bench import zoo
from seqlab.models import registry

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


@pytest.mark.slow  # one subprocess per measurement, ~1-2 minutes in all
def test_bench_reports_training_sampling_and_the_torch_peer(tmp_path):
  out = tmp_path / 'bench.json'
  result = run_command('--train', 'lstm:smoke,gru:smoke,mingru:tiny', '--sample',
                       'smoke,mingru:tiny',
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
  # The zoo row (seqlab/bench/zoo.py): on 1 device, then 2; sampled at batch 1.
  assert [(r['model'], r['size'], r['devices']) for r in report['zoo']] == [
      ('mingru', 'tiny', 1), ('mingru', 'tiny', 2)]
  for row in report['zoo']:
    assert row['seqlab']['num_params'] == 7_569 and row['flops']['total'] == 36_960
    assert 0 < row['gflops'] < 3 * ceiling and row['of_ceiling'] == row['gflops'] / ceiling
  (zoo_sample,) = report['zoo_sample']
  assert zoo_sample['batch'] == 1 and zoo_sample['chars_per_sec'] > 0
  assert '| mingru:tiny (2x16 mingru (log-space, state 16), sequential scan) | 7,569 (6,160) |' \
      in result.stdout


# --- The zoo rows' FLOP count (seqlab/models/flops.py) against counts by hand, V = 65.
# Each: (model group, matmul parameters, the other parameters, extra FLOPs per character).
# "Other" is what 6N leaves out (lookups, biases, norms, convs, ...): with it the hand count
# also matches every parameter the model has, so nothing is miscounted as the other kind.
HAND_COUNTS = {
    # 2x16 LSTM, one-hot input: recurrent kernels 2 x 16x64, layer 1's input kernel 16x64,
    # decoder 16x65. Other: layer 0's input kernel 65x64 (a row lookup), biases 2x64 and 65.
    'lstm': (zoo.MODELS['lstm']['tiny'], 2 * 16 * 64 + 16 * 64 + 16 * 65,
             65 * 64 + 2 * 64 + 65, 0),
    # 2x16 minGRU, 4x MLP: per layer gates 16x32 and MLP 16x64 + 64x16; decoder 16x65.
    # Other: embedding 65x16; per layer biases 32 + 64 + 16 and two norms 2x16; final norm 16;
    # decoder bias 65.
    'mingru': (zoo.MODELS['mingru']['tiny'], 2 * (16 * 32 + 2 * 16 * 64) + 16 * 65,
               65 * 16 + 2 * (32 + 64 + 16 + 2 * 16) + 16 + 65, 0),
    # minLSTM: gates 16x48.
    'minlstm': (zoo.MODELS['minlstm']['tiny'], 2 * (16 * 48 + 2 * 16 * 64) + 16 * 65,
                65 * 16 + 2 * (48 + 64 + 16 + 2 * 16) + 16 + 65, 0),
    # 2x16 Hawk (RG-LRU 16, MLP 48): per layer linear_y, linear_x, two gates, linear_out
    # (5 x 16x16), ffw_up 2x16x48, ffw_down 48x16; the tied head 65x16. Other: per layer five
    # biases of 16, conv 4x16 + 16, a_param 16, ffw_up_b 2x48, ffw_down bias 16, two norms
    # 2x16; final norm 16.
    'hawk': (zoo.MODELS['hawk']['tiny'], 2 * (5 * 16 * 16 + 2 * 16 * 48 + 48 * 16) + 65 * 16,
             2 * (5 * 16 + 4 * 16 + 16 + 16 + 2 * 48 + 16 + 2 * 16) + 16, 0),
    # 2x16 Mamba (E 32, N 16, R 1): per layer in_proj 16x64, x_proj 32x33, dt_proj 1x32,
    # out_proj 32x16; the tied head 65x16. Other: per layer conv 4x32 + 32, dt bias 32,
    # A_log 32x16, D 32, norm 16; final norm 16. Scan: 21 E N per layer (3 x forward 7 E N).
    'mamba': (zoo.MODELS['mamba']['tiny'], 2 * (16 * 64 + 32 * 33 + 1 * 32 + 32 * 16) + 65 * 16,
              2 * (4 * 32 + 32 + 32 + 32 * 16 + 32 + 16) + 16, 2 * 21 * 32 * 16),
    # 2x16 GPT (context 32): per layer 12 x 16x16; the tied head 65x16. Other: positions
    # 32x16, two LayerNorm scales per layer and the final one (no biases). Attention: nanoGPT's
    # 12 x layers x width x context.
    'gpt': (zoo.MODELS['gpt']['tiny'], 2 * 12 * 16 * 16 + 65 * 16, 32 * 16 + 2 * 2 * 16 + 16,
            12 * 2 * 16 * 32),
}


@pytest.mark.parametrize('model', list(HAND_COUNTS))
def test_flop_count_matches_a_hand_count(model):
  group, matmul, other, extra = HAND_COUNTS[model]
  config = registry.config_of(group, worker.VOCAB)
  count = flops.per_char(config)
  assert count['matmul_params'] == flops.matmul_params(config) == matmul
  assert count['matmul'] == 6 * matmul
  assert count['attention'] + count['scan'] == extra
  assert count['total'] == 6 * matmul + extra
  shapes = jax.eval_shape(lambda: registry.init_params(config, 0))
  assert registry.count_params(shapes) == matmul + other


def test_zoo_rows_use_the_zoo_configs_at_08m():
  """The 0.8M rows are configs/zoo.py's models (the GPT with a window of 256), about 0.8M
  parameters; the 5M rows about 5M; every size of every model builds."""
  for model in zoo.MODELS:
    if model == 'lstm':
      expected = {'name': 'char_rnn', 'cell': 'lstm', 'num_layers': 2, 'hidden_size': 256}
      chosen = zoo_configs.get_config('lstm').model.to_dict()
      assert {k: chosen[k] for k in expected} == expected
    else:
      expected = zoo_configs.get_config(model).model.to_dict()
      del expected['matmul_dtype']  # the bench's --bf16 sets it
      if model == 'gpt':
        expected['context'] = 256
      assert zoo.MODELS[model]['0.8M'] == expected
    for size, (low, high) in (('0.8M', (0.75e6, 0.9e6)), ('5M', (4.6e6, 5.5e6))):
      config = registry.config_of(zoo.MODELS[model][size], worker.VOCAB)
      assert low < registry.count_params(
          jax.eval_shape(lambda c=config: registry.init_params(c, 0))) < high
  assert zoo.split_rows(['lstm:S', 'mingru:0.8M', 'gpt:5M']) == (
      ['lstm:S'], [('mingru', '0.8M'), ('gpt', '5M')])
  assert zoo.rows_of(['0.8M'])[0] == ('lstm', '0.8M')


@pytest.mark.slow  # 9 s: the fast tier keeps within 3 minutes
@pytest.mark.parametrize('model', ['mamba', 'gpt'])
def test_a_tiny_zoo_row_runs_through_the_worker(model):
  """What a `--train MODEL:tiny --sample MODEL:tiny` row measures, in this process."""
  group = zoo.group(model, 'tiny')
  batch, seq_len = zoo.SIZES['tiny']
  result = worker.train(model=group, batch=batch, seq_len=seq_len, steps=1, warmup=1)
  assert result['num_params'] == sum(HAND_COUNTS[model][1:3])
  assert result['flops_per_char']['total'] == flops.per_char(
      registry.config_of(group, worker.VOCAB))['total']
  assert result['chars_per_sec'] > 0 and result['compile_s'] > 0
  assert result['model'] == registry.describe(registry.config_of(group, worker.VOCAB))
  sampled = worker.sample(model=group, batch=2, length=8, repeats=1)
  assert sampled['chars_per_sec'] > 0 and sampled['length'] == 8
