"""`python -m seqlab.bench` runs end to end on a tiny shape and reports what it promises; the
zoo rows are the models' declarations, their FLOP count matches a hand count, a tiny zoo row
runs through the worker, and the zoo loop runs what a declaration asks for (a PyTorch peer,
the bandwidth, the stubbed scans)."""

import dataclasses
import importlib.util
import json

import jax
import pytest

from conftest import run_command
from configs import zoo as zoo_configs
from seqlab.models import declaration
from seqlab.models import flops
from seqlab.bench import measures
from seqlab.bench import worker
from seqlab.bench import zoo
from seqlab.bench import zoo_rows
from seqlab.bench.timing import VOCAB
from seqlab.models import registry

# The smoke shape (seqlab/bench/lstm_rows.py SHAPES): 2 layers of 32 units, batches of 16 x 32;
# the bench's models read tiny Shakespeare's 65 symbols.
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
    'lstm': (registry.group_of('lstm', 'tiny'), 2 * 16 * 64 + 16 * 64 + 16 * 65,
             65 * 64 + 2 * 64 + 65, 0),
    # 2x16 minGRU, 4x MLP: per layer gates 16x32 and MLP 16x64 + 64x16; decoder 16x65.
    # Other: embedding 65x16; per layer biases 32 + 64 + 16 and two norms 2x16; final norm 16;
    # decoder bias 65.
    'mingru': (registry.group_of('mingru', 'tiny'), 2 * (16 * 32 + 2 * 16 * 64) + 16 * 65,
               65 * 16 + 2 * (32 + 64 + 16 + 2 * 16) + 16 + 65, 0),
    # minLSTM: gates 16x48.
    'minlstm': (registry.group_of('minlstm', 'tiny'), 2 * (16 * 48 + 2 * 16 * 64) + 16 * 65,
                65 * 16 + 2 * (48 + 64 + 16 + 2 * 16) + 16 + 65, 0),
    # 2x16 Hawk (RG-LRU 16, MLP 48): per layer linear_y, linear_x, two gates, linear_out
    # (5 x 16x16), ffw_up 2x16x48, ffw_down 48x16; the tied head 65x16. Other: per layer five
    # biases of 16, conv 4x16 + 16, a_param 16, ffw_up_b 2x48, ffw_down bias 16, two norms
    # 2x16; final norm 16.
    'hawk': (registry.group_of('hawk', 'tiny'), 2 * (5 * 16 * 16 + 2 * 16 * 48 + 48 * 16) + 65 * 16,
             2 * (5 * 16 + 4 * 16 + 16 + 16 + 2 * 48 + 16 + 2 * 16) + 16, 0),
    # 2x16 Mamba (E 32, N 16, R 1): per layer in_proj 16x64, x_proj 32x33, dt_proj 1x32,
    # out_proj 32x16; the tied head 65x16. Other: per layer conv 4x32 + 32, dt bias 32,
    # A_log 32x16, D 32, norm 16; final norm 16. Scan: 21 E N per layer (3 x forward 7 E N).
    'mamba': (registry.group_of('mamba', 'tiny'),
              2 * (16 * 64 + 32 * 33 + 1 * 32 + 32 * 16) + 65 * 16,
              2 * (4 * 32 + 32 + 32 + 32 * 16 + 32 + 16) + 16, 2 * 21 * 32 * 16),
    # 2x16 GPT (context 32): per layer 12 x 16x16; the tied head 65x16. Other: positions
    # 32x16, two LayerNorm scales per layer and the final one (no biases). Attention: nanoGPT's
    # 12 x layers x width x context.
    'gpt': (registry.group_of('gpt', 'tiny'), 2 * 12 * 16 * 16 + 65 * 16, 32 * 16 + 2 * 2 * 16 + 16,
            12 * 2 * 16 * 32),
}


@pytest.mark.parametrize('model', list(HAND_COUNTS))
def test_flop_count_matches_a_hand_count(model):
  group, matmul, other, extra = HAND_COUNTS[model]
  config = registry.config_of(group, VOCAB)
  count = flops.per_char(config)
  assert count['matmul_params'] == flops.matmul_params(config) == matmul
  assert count['matmul'] == 6 * matmul
  declared = {k: v for k, v in count.items() if k not in ('matmul_params', 'matmul', 'total')}
  assert set(declared) <= {'attention', 'scan'} and sum(declared.values()) == extra
  assert count['total'] == 6 * matmul + extra
  shapes = jax.eval_shape(lambda: registry.init_params(config, 0))
  assert registry.count_params(shapes) == matmul + other


def test_zoo_rows_are_the_declared_variants_and_configs_zoo_py_at_08m():
  """The rows are every registered variant, the default model's first; each 0.8M group is its
  configs/zoo.py variant's model (the GPT with a window of 256, its declaration's only
  difference), about 0.8M parameters; the 5M groups about 5M; every size of every model builds."""
  assert tuple(zoo.SIZES) == declaration.SIZES
  variants = registry.variants()
  names = zoo.variant_names()
  assert sorted(names) == sorted(variants) and names[0] == zoo.baseline() == 'lstm'
  assert zoo.rows_of(['0.8M', '5M']) == [(v, s) for s in ('0.8M', '5M') for v in names]
  for variant, (model, declared) in variants.items():
    group = zoo.group(variant, '0.8M')
    assert group == {'name': model.name, **declared.sizes['0.8M']}
    differs = {k for k in {**declared.zoo_fields, **group} if k != 'name' and
               declared.zoo_fields.get(k) != group.get(k)}
    assert differs == ({'context'} if variant == 'gpt' else set()), variant
    assert group.get('context', 256) == 256  # the bench's batch 32 x seq 256 fits the window
    # configs/zoo.py also spells out the model's defaults; the bench's group leaves them implicit.
    expected = {**registry.defaults(model.name), **group,
                **{k: declared.zoo_fields[k] for k in differs}}
    chosen = zoo_configs.get_config(variant).model.to_dict()
    for fields in (chosen, expected):
      del fields['matmul_dtype']  # the bench's --bf16 sets it
    assert chosen == expected, variant
    assert zoo.has_scan(variant) == ('scan' in model.equivalent) == ('scan' in group)
    for size, (low, high) in (('0.8M', (0.75e6, 0.9e6)), ('5M', (4.6e6, 5.5e6))):
      config = registry.config_of(zoo.group(variant, size), VOCAB)
      assert low < registry.count_params(
          jax.eval_shape(lambda c=config: registry.init_params(c, 0))) < high
  assert zoo.split_rows(['lstm:S', 'mingru:0.8M', 'gpt:5M', 'nosuch:0.8M']) == (
      ['lstm:S', 'nosuch:0.8M'], [('mingru', '0.8M'), ('gpt', '5M')])
  assert zoo.window(zoo.group('gpt', 'tiny')) == 32
  assert zoo.window(zoo.group('hawk', 'tiny')) is None


def test_the_zoo_loop_runs_what_the_declarations_ask_for(monkeypatch):
  """A model's `bench_peer` is timed beside its rows (a worker measurement of that name); a
  `memory_bound` model's rows ask for the bandwidth; `--scan` reaches only the models with a
  scan, `--stub_scans` those that declare a stub of their time loop; a failure is recorded and the rest run on; each row is set against the
  baseline's. The worker's processes are replaced by a stand-in."""
  calls = []

  def fake_measure(kind, **args):
    calls.append((kind, args))
    if args.get('model', {}).get('name') == 'hawk':
      raise RuntimeError('out of memory')
    speed = {'char_rnn': 1000.0, 'gpt': 500.0}.get(args.get('model', {}).get('name'), 250.0)
    return {'chars_per_sec': speed, 'devices': 1, 'model': 'described', 'num_params': 1,
            'compile_s': 1.0, 'flops_per_char': {'matmul_params': 10, 'total': 100},
            'first_call_s': 0.1, 'length': args.get('length')}
  monkeypatch.setattr(zoo_rows, 'measure', fake_measure)
  peers = {v: zoo.model_of(v).bench_peer for v in zoo.variant_names()}
  assert peers['gpt'] == 'torch_gpt_train' and peers['lstm'] is None
  assert all(kind in worker.KINDS for kind in peers.values() if kind)
  assert zoo_rows.memory_bound([('gpt', 'tiny'), ('mamba', 'tiny')])
  assert not zoo_rows.memory_bound([('gpt', 'tiny'), ('lstm', 'tiny')])
  errors = []
  rows = zoo_rows.train_rows([('lstm', 'tiny'), ('gpt', 'tiny'), ('mingru', 'tiny'),
                              ('hawk', 'tiny')], 1000.0, 2, [1], {}, ['associative'], True,
                             True, False, False, errors=errors)
  assert [(r['model'], r['group'].get('scan'), r['stub_scans']) for r in rows] == [
      ('lstm', None, False), ('gpt', None, False), ('mingru', 'associative', False),
      ('mingru', 'sequential', True)]
  (peer,) = [args for kind, args in calls if kind == 'torch_gpt_train']
  assert peer == {**zoo.group('gpt', 'tiny'), 'batch': 8, 'seq_len': 32, 'steps': 2,
                  'bf16': False, 'compile': False}
  assert rows[1]['vs_torch'] == 2.0 and rows[1]['vs_lstm'] == 0.5 and 'torch' not in rows[2]
  assert [(e['model'], e['stub_scans']) for e in errors] == [('hawk', False), ('hawk', True)]
  sampled = zoo_rows.sample_rows([('gpt', 'tiny'), ('mingru', 'tiny')], [1], 2000, 1, {})
  assert [s['length'] for s in sampled] == [31, 2000]  # the GPT inside its window of 32
  assert '| ↳ PyTorch peer |' in zoo.table(rows, sampled, 1000.0)  # the stand-in has no label


def test_stub_scans_call_every_declared_stub(monkeypatch):
  """`--stub_scans` (measures.stub_model_scans) calls the `stub_scans` of every registered
  model that declares one, and patches nothing itself (the stubs here only record)."""
  called = []
  declared = {name: registry.get(name) for name in registry.names()}
  recording = {name: dataclasses.replace(
      model, stub_scans=(lambda name=name: called.append(name)) if model.stub_scans else None)
               for name, model in declared.items()}
  monkeypatch.setattr(registry, 'get', recording.__getitem__)
  measures.stub_model_scans()
  assert called == [name for name, model in declared.items() if model.stub_scans]
  assert {'min_rnn', 'hawk', 'mamba'} <= set(called) and 'gpt' not in called


def test_the_bench_command_imports_no_jax_until_it_runs():
  """`seqlab.bench.main` (its flags) imports no JAX, and telling LSTM rows from zoo rows looks
  no model up; the rows' lookups and the machine's description import it when the bench runs."""
  done = run_command(code='import sys; import seqlab.bench.main; from seqlab.bench import zoo; '
                          "zoo.split_rows(['lstm:smoke', 'gru:S']); "
                          'print([m for m in ("jax", "flax", "numpy") if m in sys.modules])')
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip().splitlines()[-1] == '[]'


@pytest.mark.slow  # 9 s: the fast tier keeps within 3 minutes
@pytest.mark.parametrize('model', ['mamba', 'gpt'])
def test_a_tiny_zoo_row_runs_through_the_worker(model):
  """What a `--train MODEL:tiny --sample MODEL:tiny` row measures, in this process."""
  group = zoo.group(model, 'tiny')
  batch, seq_len = zoo.SIZES['tiny']
  result = measures.train(model=group, batch=batch, seq_len=seq_len, steps=1, warmup=1)
  assert result['num_params'] == sum(HAND_COUNTS[model][1:3])
  assert result['flops_per_char']['total'] == flops.per_char(
      registry.config_of(group, VOCAB))['total']
  assert result['chars_per_sec'] > 0 and result['compile_s'] > 0
  assert result['model'] == registry.describe(registry.config_of(group, VOCAB))
  sampled = measures.sample(model=group, batch=2, length=8, repeats=1)
  assert sampled['chars_per_sec'] > 0 and sampled['length'] == 8
