"""Benchmarks: `python -m seqlab.bench [--train lstm:S,gru:M] [--sample S,L] [--out FILE]`,
and the model zoo: `python -m seqlab.bench --zoo 0.8M,5M [--steps 5] [--out FILE]`.

In one run, on one machine: the fp32 matmul ceiling (a 2048^3 JAX matmul);
seqlab's training throughput (chars/s = batch x seq_len / median step time,
after compilation and warm-up), its GFLOP/s counting 6 x parameters x chars
and their fraction of the ceiling, compile time and peak memory; the same
model trained by PyTorch (nn.Embedding -> nn.LSTM/GRU/RNN -> nn.Linear, Adam,
clipping) when torch is installed; and sampling chars/s at batch 1 and 64.
Every measurement runs in its own process (`seqlab.bench.worker`, started by
`seqlab.bench.spawn`). Prints markdown tables; `--out` writes everything as JSON.
This module holds the flags and the order of the run; the rows are
`seqlab.bench.lstm_rows` (CELL:SHAPE) and `seqlab.bench.zoo` with `seqlab.bench.zoo_rows`
(VARIANT:SIZE). Importing it imports no JAX.

Rows: `--train` and `--sample` take CELL:SHAPE (the LSTM rows above: cell rnn/gru/lstm,
shape smoke/S/M/L, each shape its own layers, width, batch and seq_len) and VARIANT:SIZE, a
zoo row (`seqlab/bench/zoo.py`): VARIANT every registered variant (`registry.variants()`,
each model's declaration; a bad row's error lists them) and SIZE one of 0.8M, 5M (batch 32 x
seq 256) or tiny (tests), e.g. `--train mingru:0.8M,lstm:0.8M --sample mingru:0.8M`.
`--zoo 0.8M,5M` is every variant at those sizes, the same-size LSTM first, for both `--train`
and `--sample` (when those are not given). A zoo row reports its FLOPs per character by its
own model's count (`seqlab/models/flops.py`: 6 x matmul parameters, embedding lookups not
counted, a tied output head counted; plus what the model declares beyond its matrices, such as
attention or a selective scan) and its fraction of the matmul ceiling by that count, beside the
same-size LSTM's chars/s counted alike; the GPT reads a window of 256 there. `--scan
sequential,associative` trains each zoo model that has a scan once per form; `--stub_scans`
adds, per such model, a row with its scan replaced by elementwise work without the time loop
(a profile: the model without its recurrence). `--model_fields` applies to a zoo row only the
fields that its model has; `--zoo_batch` trains the zoo rows at another batch size. Zoo
sampling: `--sample_length` characters per call (a model with a window, the GPT: at most
window - 1, inside its KV cache), `--sample_repeats` calls. With `--torch`, the rows of a
model that declares a PyTorch peer (`registry.Model.bench_peer`: the GPT's nanoGPT-style one)
also train that peer (`--torch_compile`: under torch.compile, as nanoGPT does). Zoo rows that
include a memory-bound model (`registry.Model.memory_bound`: Mamba) also measure the memory
bandwidth (its scan's bound). With `--out`, the JSON is rewritten after every zoo
measurement, and a zoo measurement that fails (out of memory, say) is recorded under
`zoo_errors` while the others run on. experiments/performance/README.md has the numbers;
experiments/performance/zoo_profile.py splits a zoo row's step into matmuls, scan and the rest.
"""

import json
import os
import pathlib

from absl import app
from absl import flags
from absl import logging

from seqlab.bench import lstm_rows
from seqlab.bench import zoo
from seqlab.bench import zoo_rows
from seqlab.bench.spawn import machine, measure

FLAGS = flags.FLAGS

_TRAIN = flags.DEFINE_list('train', ['lstm:S', 'lstm:M', 'gru:M', 'lstm:L'],
                           'cell:shape pairs to train (shapes: smoke, S, M, L) and zoo rows '
                           'model:size (model: every registered variant; sizes: tiny, 0.8M, '
                           '5M); empty: none.')
_SAMPLE = flags.DEFINE_list('sample', ['smoke', 'S', 'L'], 'Shapes to sample from (LSTM), and '
                            'zoo rows model:size.')
_ZOO = flags.DEFINE_list('zoo', [], 'Sizes (tiny, 0.8M, 5M): train and sample every registered '
                         'variant at each, the same-size LSTM first (the defaults of --train '
                         'and --sample become none).')
_SCAN = flags.DEFINE_list('scan', [], 'Zoo rows: train each model that has a scan once per '
                          'form listed (sequential, associative); empty: each config\'s own.')
_STUB_SCANS = flags.DEFINE_bool('stub_scans', False, 'Zoo rows: also train each model that has '
                                'a scan with the scan replaced by elementwise work (profile).')
_SAMPLE_LENGTH = flags.DEFINE_integer('sample_length', 2000, 'Characters per sampling call (a '
                                      'zoo row of a model with a window, the GPT: at most '
                                      'window - 1, its KV cache).')
_SAMPLE_REPEATS = flags.DEFINE_integer('sample_repeats', 5, 'Timed sampling calls (median).')
_ZOO_BATCH = flags.DEFINE_integer('zoo_batch', 0, 'Zoo rows: train this batch size instead of '
                                  'the size\'s (32 for 0.8M and 5M); 0: the size\'s.')
_TORCH_COMPILE = flags.DEFINE_bool('torch_compile', False, 'The zoo rows\' PyTorch peers (a '
                                   'model\'s bench_peer: the GPT\'s) under torch.compile (as '
                                   'nanoGPT\'s train.py).')
_SAMPLE_BATCHES = flags.DEFINE_list('sample_batches', ['1', '64'], 'Sampling batch sizes.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed training steps (median reported).')
_TORCH = flags.DEFINE_bool('torch', True, 'Also train the PyTorch peer (if torch is installed).')
_MODEL = flags.DEFINE_string('model_fields', '{}', 'JSON of extra ModelConfig fields for seqlab, '
                             'e.g. \'{"unroll": 2}\'.')
_BF16 = flags.DEFINE_bool('bf16', False, 'bf16 matmuls: seqlab model.matmul_dtype=bfloat16, '
                          'PyTorch under autocast(bfloat16), and a bf16 matmul ceiling.')
_CPU_DEVICES = flags.DEFINE_list(
    'cpu_devices', None, 'On a CPU: train seqlab split into each of these numbers of devices '
    '(parallel.cpu_devices; the batch is split over them). Default: 1 and one per core.')
_OUT = flags.DEFINE_string('out', None, 'JSON file for all results.')


def cpu_device_counts(flag: list[str] | None, platform_name: str) -> list[int]:
  """How many devices to split a CPU into, one row each; [0] (leave as is) on an accelerator."""
  if platform_name != 'cpu':
    return [0]
  if flag is None:
    return sorted({1, os.cpu_count() or 1})
  try:
    counts = [int(c) for c in flag]
  except ValueError:
    counts = []
  if not counts or min(counts) < 1:
    raise app.UsageError(f'--cpu_devices {flag}: use numbers >= 1, e.g. 1,2')
  return counts


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  sizes = [z for z in _ZOO.value if z]
  if set(sizes) - set(zoo.SIZES):
    raise app.UsageError(f'--zoo {sizes}: sizes are {", ".join(zoo.SIZES)}')
  if set(_SCAN.value) - {'sequential', 'associative'}:
    raise app.UsageError(f'--scan {_SCAN.value}: use sequential and/or associative')
  train_items = [t for t in _TRAIN.value if t] if not sizes or FLAGS['train'].present else []
  sample_items = [s for s in _SAMPLE.value if s] if not sizes or FLAGS['sample'].present else []
  train_items, zoo_train = zoo.split_rows(train_items)
  sample_shapes, zoo_sample = zoo.split_rows(sample_items)
  if sizes and not FLAGS['train'].present:
    zoo_train = zoo.rows_of(sizes)
  if sizes and not FLAGS['sample'].present:
    zoo_sample = zoo.rows_of(sizes)
  pairs = lstm_rows.parse_train(train_items)
  if set(sample_shapes) - set(lstm_rows.SHAPES):
    raise app.UsageError(f'--sample {sample_shapes}: shapes are {sorted(lstm_rows.SHAPES)}, or '
                         'zoo rows model:size')
  info = machine()
  print(f'seqlab.bench on {info["platform"]} ({info["processor"]}, {info["cpu_count"]} CPUs), '
        f'jax {info["jax"]}, python {info["python"]}\n')
  results = {'machine': info, 'bf16': _BF16.value}
  fields = json.loads(_MODEL.value)
  if _BF16.value:
    fields['matmul_dtype'] = 'bfloat16'
  dtype = 'bf16' if _BF16.value else 'fp32'
  batches = [int(b) for b in _SAMPLE_BATCHES.value]
  if pairs or zoo_train:
    # 2048^3 saturates a CPU; an accelerator needs a larger product to reach its peak.
    size = 2048 if info['platform'] == 'cpu' else 8192
    ceiling = measure('matmul', size=size,
                      dtype='bfloat16' if _BF16.value else 'float32')['gflops']
    results['matmul_gflops'] = ceiling
    counts = cpu_device_counts(_CPU_DEVICES.value, info['platform'])
  if pairs:
    results['train'] = lstm_rows.train_rows(pairs, ceiling, _STEPS.value, _TORCH.value, fields,
                                            _BF16.value, counts)
    print(lstm_rows.train_table(results['train'], ceiling, dtype) + '\n')
  if sample_shapes:
    results['sample'] = lstm_rows.sample_rows(sample_shapes, batches, fields,
                                              _SAMPLE_LENGTH.value, _SAMPLE_REPEATS.value)
    print(lstm_rows.sample_table(results['sample']) + '\n')
  if zoo_train and zoo_rows.memory_bound(zoo_train):
    results['bandwidth'] = measure('bandwidth', mib=256 if info['platform'] == 'cpu' else 4096)
    results['bandwidth_gbytes_per_s'] = results['bandwidth']['gbytes_per_s']

  def saved():  # the zoo rows take minutes each on a CPU: keep what a cut-short run measured
    if _OUT.value:
      pathlib.Path(_OUT.value).write_text(json.dumps(results, indent=2))
  if zoo_train:
    zoo_rows.train_rows(zoo_train, ceiling, _STEPS.value, counts, fields, _SCAN.value,
                        _STUB_SCANS.value, _TORCH.value, _TORCH_COMPILE.value, _BF16.value,
                        rows=results.setdefault('zoo', []), saved=saved,
                        errors=results.setdefault('zoo_errors', []), batch_size=_ZOO_BATCH.value)
  if zoo_sample:
    zoo_rows.sample_rows(zoo_sample, batches, _SAMPLE_LENGTH.value, _SAMPLE_REPEATS.value,
                         fields, rows=results.setdefault('zoo_sample', []), saved=saved,
                         errors=results.setdefault('zoo_errors', []))
  if zoo_train:
    print(zoo.table(results['zoo'], results.get('zoo_sample', []), ceiling, dtype) + '\n')
  for error in results.get('zoo_errors', []):
    print(f'FAILED {error["kind"]} {error["model"]}:{error["size"]}: {error["error"]}')
  if zoo_sample:
    rest = zoo.sample_only_table(results['zoo_sample'],
                                 {(r['model'], r['size']) for r in results.get('zoo', [])})
    if rest:
      print(rest + '\n')
  results['machine']['load_average_end'] = list(os.getloadavg())
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(json.dumps(results, indent=2))


def run() -> None:
  """The command: `python -m seqlab.bench`."""
  app.run(main)
