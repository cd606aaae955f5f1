"""Benchmarks: `python -m seqlab.bench [--train lstm:S,gru:M] [--sample S,L] [--out FILE]`,
and the model zoo: `python -m seqlab.bench --zoo 0.8M,5M [--steps 5] [--out FILE]`.

In one run, on one machine: the fp32 matmul ceiling (a 2048^3 JAX matmul);
seqlab's training throughput (chars/s = batch x seq_len / median step time,
after compilation and warm-up), its GFLOP/s counting 6 x parameters x chars
and their fraction of the ceiling, compile time and peak memory; the same
model trained by PyTorch (nn.Embedding -> nn.LSTM/GRU/RNN -> nn.Linear, Adam,
clipping) when torch is installed; and sampling chars/s at batch 1 and 64.
Every measurement runs in its own process (`seqlab.bench.worker`). Prints
markdown tables; `--out` writes everything as JSON.

Rows: `--train` and `--sample` take CELL:SHAPE (the LSTM rows above: cell rnn/gru/lstm,
shape smoke/S/M/L, each shape its own layers, width, batch and seq_len) and MODEL:SIZE, a
zoo row (`seqlab/bench/zoo.py`): MODEL one of lstm, mingru, minlstm, hawk, mamba, gpt and
SIZE one of 0.8M, 5M (batch 32 x seq 256) or tiny (tests), e.g.
`--train mingru:0.8M,lstm:0.8M --sample mingru:0.8M`. `--zoo 0.8M,5M` is every zoo model
at those sizes, the same-size LSTM first, for both `--train` and `--sample` (when those are
not given). A zoo row reports its FLOPs per character by its own model's count
(`seqlab/models/flops.py`: 6 x matmul parameters, embedding lookups not counted, a tied
output head counted; plus attention for the GPT and the selective scan for Mamba) and its
fraction of the matmul ceiling by that count, beside the same-size LSTM's chars/s counted
alike; the GPT reads a window of 256 there. `--scan sequential,associative` trains each
zoo model that has a scan once per form; `--stub_scans` adds, per such model, a row with its
scan replaced by elementwise work without the time loop (a profile: the model without its
recurrence). `--model_fields` applies to a zoo row only the fields that its model has;
`--zoo_batch` trains the zoo rows at another batch size. Zoo sampling: `--sample_length`
characters per call (a GPT: at most context - 1, inside its KV cache), `--sample_repeats`
calls. With `--torch`, the GPT rows also train a nanoGPT-style PyTorch peer
(`--torch_compile`: under torch.compile, as nanoGPT does). Zoo rows that include Mamba also
measure the memory bandwidth (its scan's bound). With `--out`, the JSON is rewritten after
every zoo measurement, and a zoo measurement that fails (out of memory, say) is recorded
under `zoo_errors` while the others run on. experiments/performance/README.md has the
numbers; experiments/performance/zoo_profile.py splits a zoo row's step into matmuls, scan
and the rest.
"""

import json
import os
import pathlib
import platform
import subprocess
import sys

from absl import app
from absl import flags
from absl import logging

from seqlab.bench import zoo

FLAGS = flags.FLAGS

# name -> (num_layers, hidden_size, batch, seq_len)
SHAPES = {
    'smoke': (2, 32, 16, 32),
    'S': (2, 128, 50, 50),  # char-rnn's default
    'M': (2, 256, 32, 256),
    'L': (3, 512, 64, 100),  # the post's model
}

_TRAIN = flags.DEFINE_list('train', ['lstm:S', 'lstm:M', 'gru:M', 'lstm:L'],
                           'cell:shape pairs to train (shapes: smoke, S, M, L) and zoo rows '
                           'model:size (sizes: tiny, 0.8M, 5M); empty: none.')
_SAMPLE = flags.DEFINE_list('sample', ['smoke', 'S', 'L'], 'Shapes to sample from (LSTM), and '
                            'zoo rows model:size.')
_ZOO = flags.DEFINE_list('zoo', [], 'Sizes (tiny, 0.8M, 5M): train and sample every zoo model '
                         'at each, the same-size LSTM first (the defaults of --train and '
                         '--sample become none).')
_SCAN = flags.DEFINE_list('scan', [], 'Zoo rows: train each model that has a scan once per '
                          'form listed (sequential, associative); empty: each config\'s own.')
_STUB_SCANS = flags.DEFINE_bool('stub_scans', False, 'Zoo rows: also train each model that has '
                                'a scan with the scan replaced by elementwise work (profile).')
_SAMPLE_LENGTH = flags.DEFINE_integer('sample_length', 2000, 'Characters per sampling call (a '
                                      'GPT zoo row: at most its context - 1, its KV cache).')
_SAMPLE_REPEATS = flags.DEFINE_integer('sample_repeats', 5, 'Timed sampling calls (median).')
_ZOO_BATCH = flags.DEFINE_integer('zoo_batch', 0, 'Zoo rows: train this batch size instead of '
                                  'the size\'s (32 for 0.8M and 5M); 0: the size\'s.')
_TORCH_COMPILE = flags.DEFINE_bool('torch_compile', False, 'The PyTorch GPT peer under '
                                   'torch.compile (as nanoGPT\'s train.py).')
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


def measure(kind: str, **args) -> dict:
  """Runs one measurement in a fresh process and returns its JSON result."""
  result = subprocess.run([sys.executable, '-m', 'seqlab.bench.worker', kind, json.dumps(args)],
                          capture_output=True, text=True, check=False)
  if result.returncode:
    tail = result.stderr.strip().splitlines()[-1:] or ['(no output)']
    killed = ' (killed by SIGKILL: out of memory?)' if result.returncode == -9 else ''
    raise RuntimeError(f'benchmark {kind} {args} failed with exit code {result.returncode}'
                       f'{killed}: {tail[0]}')
  return json.loads(result.stdout.strip().splitlines()[-1])


def machine() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  # The load average: on a shared machine, other work running at the same time slows every
  # measurement (the ceiling too); kept with the results, at the start and the end.
  return {'platform': device.platform, 'device': device.device_kind, 'cpu_count': os.cpu_count(),
          'processor': platform.processor() or platform.machine(), 'jax': jax.__version__,
          'python': platform.python_version(), 'load_average_start': list(os.getloadavg())}


def _parse_train(items: list[str]) -> list[tuple[str, str]]:
  pairs = [tuple(item.split(':')) for item in items]
  bad = [i for i, p in zip(items, pairs) if len(p) != 2 or p[1] not in SHAPES
         or p[0] not in ('rnn', 'gru', 'lstm')]
  if bad:
    raise app.UsageError(f'--train {bad}: use cell:shape, cell in rnn/gru/lstm, shape in '
                         f'{sorted(SHAPES)}, or model:size, model in {", ".join(zoo.MODELS)}, '
                         f'size in {", ".join(zoo.SIZES)}')
  return pairs


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


def train_rows(pairs, ceiling: float, steps: int, with_torch: bool, fields: dict,
               bf16: bool, device_counts: list[int]) -> list[dict]:
  """One row per (cell, shape, device count); PyTorch runs once per (cell, shape)."""
  rows = []
  for cell, shape in pairs:
    layers, hidden, batch, seq_len = SHAPES[shape]
    args = dict(cell=cell, num_layers=layers, hidden_size=hidden, batch=batch, seq_len=seq_len,
                steps=steps)
    peer = measure('torch_train', **args, bf16=bf16) if with_torch else None
    # On a CPU, PyTorch also under seqlab's malloc settings (seqlab/host_memory.py): they
    # speed it up too, and a fair ratio compares like with like.
    peer_tuned = measure('torch_train', **args, bf16=bf16, malloc_tuning=True) \
        if with_torch and device_counts != [0] and 'missing' not in peer else None
    for count in device_counts:
      if count and batch % count:
        print(f'train {cell}:{shape}: batch {batch} does not split over {count} devices; '
              'skipped', file=sys.stderr, flush=True)
        continue
      ours = measure('train', **args, cpu_devices=count, **fields)
      gflops = 6 * ours['num_params'] * ours['chars_per_sec'] / 1e9
      row = {'shape': shape, 'cell': cell, 'layers': layers, 'hidden': hidden, 'batch': batch,
             'seq_len': seq_len, 'devices': ours['devices'], 'seqlab': ours, 'gflops': gflops,
             'of_ceiling': gflops / ceiling}
      if peer is not None:
        row['torch'] = peer
        if 'chars_per_sec' in peer:
          row['vs_torch'] = ours['chars_per_sec'] / peer['chars_per_sec']
      if peer_tuned is not None:
        row['torch_malloc_tuned'] = peer_tuned
        row['vs_torch_malloc_tuned'] = ours['chars_per_sec'] / peer_tuned['chars_per_sec']
      rows.append(row)
      print(f'train {cell}:{shape} on {ours["devices"]} device(s): '
            f'{ours["chars_per_sec"]:,.0f} chars/s'
            + (f', {row["vs_torch"]:.2f}x PyTorch' if 'vs_torch' in row else '')
            + (f', {row["vs_torch_malloc_tuned"]:.2f}x PyTorch with the same malloc settings'
               if 'vs_torch_malloc_tuned' in row else ''),
            file=sys.stderr, flush=True)
  return rows


def _mib(result: dict, key: str) -> str:
  return f'{result[key]:,.0f}' if result.get(key) is not None else '-'


def train_table(rows: list[dict], ceiling: float, dtype: str = 'fp32') -> str:
  on_device = any(r['seqlab'].get('peak_device_mib') is not None for r in rows)
  memory = 'peak device MiB' if on_device else 'peak RSS MiB'
  tuned = any('torch_malloc_tuned' in r for r in rows)
  tuned_header = ' PyTorch, same malloc, chars/s | seqlab / that |' if tuned else ''
  lines = [f'Training ({dtype} matmul ceiling measured in this run: {ceiling:,.0f} GFLOP/s)', '',
           '| shape | model | batch x seq | devices | seqlab chars/s | GFLOP/s | of ceiling | '
           f'PyTorch chars/s | seqlab / PyTorch |{tuned_header} compile s | '
           f'{memory} (seqlab / PyTorch) |',
           '|---|---|---|' + '---:|' * (10 if tuned else 8)]
  for r in rows:
    ours, peer = r['seqlab'], r.get('torch', {})
    peer_speed = f'{peer["chars_per_sec"]:,.0f}' if 'chars_per_sec' in peer else \
        peer.get('missing', 'not run')
    ratio = f'**{r["vs_torch"]:.2f}x**' if 'vs_torch' in r else '-'
    tuned_cells = ''
    if tuned:
      other = r.get('torch_malloc_tuned')
      tuned_cells = (f' {other["chars_per_sec"]:,.0f} | **{r["vs_torch_malloc_tuned"]:.2f}x** |'
                     if other else ' - | - |')
    key = 'peak_device_mib' if on_device else 'peak_rss_mib'
    lines.append(f'| {r["shape"]} | {r["layers"]}x{r["hidden"]} {r["cell"]} | {r["batch"]} x '
                 f'{r["seq_len"]} | {r["devices"]} | {ours["chars_per_sec"]:,.0f} | '
                 f'{r["gflops"]:.1f} | {r["of_ceiling"]:.0%} | {peer_speed} | {ratio} |'
                 f'{tuned_cells} {ours["compile_s"]:.1f} | {_mib(ours, key)} / {_mib(peer, key)} |')
  return '\n'.join(lines)


def sample_rows(shapes: list[str], batches: list[int], fields: dict, length: int = 2000,
                repeats: int = 5) -> list[dict]:
  rows = []
  for shape in shapes:
    layers, hidden, _, _ = SHAPES[shape]
    for batch in batches:
      result = measure('sample', cell='lstm', num_layers=layers, hidden_size=hidden, batch=batch,
                       length=length, repeats=repeats, **fields)
      rows.append({'shape': shape, 'layers': layers, 'hidden': hidden, 'batch': batch, **result})
      print(f'sample {shape} batch {batch}: {result["chars_per_sec"]:,.0f} chars/s',
            file=sys.stderr, flush=True)
  return rows


def sample_table(rows: list[dict]) -> str:
  length = rows[0].get('length', 2000) if rows else 2000
  lines = [f'Sampling ({length:,} characters per call, temperature 0.8, no top-k)', '',
           '| shape | model | batch | chars/s | first call (compile) s |',
           '|---|---|---:|---:|---:|']
  for r in rows:
    lines.append(f'| {r["shape"]} | {r["layers"]}x{r["hidden"]} lstm | {r["batch"]} | '
                 f'{r["chars_per_sec"]:,.0f} | {r["first_call_s"]:.2f} |')
  return '\n'.join(lines)


def zoo_train_rows(specs, ceiling: float, steps: int, device_counts: list[int], fields: dict,
                   scans: list[str], stub_scans: bool, with_torch: bool, torch_compile: bool,
                   bf16: bool, rows: list | None = None, saved=lambda: None,
                   errors: list | None = None, batch_size: int = 0) -> list[dict]:
  """One row per (model, size, scan form, device count), and with `stub_scans` one more per
  scan model (scan removed); each beside the same-size LSTM's chars/s on as many devices.
  Appends to `rows` and calls `saved()` after each (a run cut short keeps what it measured);
  a measurement that fails goes to `errors` instead, and the others still run."""
  rows = [] if rows is None else rows
  errors = [] if errors is None else errors
  for model, size in specs:
    batch, seq_len = zoo.SIZES[size]
    batch = batch_size or batch
    variants = [(scan, False) for scan in (scans if zoo.has_scan(model) and scans else [None])]
    if stub_scans and zoo.has_scan(model):
      variants.append((None, True))
    for scan, stub in variants:
      group = zoo.group(model, size, fields, scan)
      for count in device_counts:
        if count and batch % count:
          print(f'train {model}:{size}: batch {batch} does not split over {count} devices; '
                'skipped', file=sys.stderr, flush=True)
          continue
        try:
          ours = measure('train', model=group, batch=batch, seq_len=seq_len, steps=steps,
                         cpu_devices=count, stub_scans=stub)
        except RuntimeError as e:  # one model failing (memory, a bug) does not lose the rest
          errors.append({'kind': 'train', 'model': model, 'size': size, 'group': group,
                         'devices': count, 'stub_scans': stub, 'error': str(e)})
          print(f'train {model}:{size}: {e}', file=sys.stderr, flush=True)
          saved()
          continue
        flop_count = ours['flops_per_char']
        gflops = flop_count['total'] * ours['chars_per_sec'] / 1e9
        row = {'model': model, 'size': size, 'group': group, 'describe': ours['model'],
               'stub_scans': stub, 'batch': batch, 'seq_len': seq_len,
               'devices': ours['devices'], 'seqlab': ours, 'flops': flop_count,
               'gflops': gflops, 'of_ceiling': gflops / ceiling}
        if stub:
          row['describe'] += ', SCAN REMOVED (profile)'
        rows.append(row)
        _set_vs_lstm(rows)
        saved()
        print(f'train {model}:{size} ({row["describe"]}) on {ours["devices"]} device(s): '
              f'{ours["chars_per_sec"]:,.0f} chars/s, {row["of_ceiling"]:.0%} of the ceiling',
              file=sys.stderr, flush=True)
    if model == 'gpt' and with_torch:
      group = zoo.group(model, size, fields)
      try:
        peer = measure('torch_gpt_train', **group, batch=batch, seq_len=seq_len, steps=steps,
                       bf16=bf16, compile=torch_compile)
      except RuntimeError as e:
        peer = {'error': str(e)}
      for row in rows:
        if (row['model'], row['size']) == (model, size):
          row['torch'] = peer
          if 'chars_per_sec' in peer:
            row['vs_torch'] = row['seqlab']['chars_per_sec'] / peer['chars_per_sec']
      saved()
  return rows


def _set_vs_lstm(rows: list[dict]) -> None:
  """Each zoo row's speed against the LSTM row of its size, batch and device count, if measured."""
  for row in rows:
    lstm = [r for r in rows if (r['model'], r['size'], r['devices'], r['batch']) ==
            (zoo.BASELINE, row['size'], row['devices'], row['batch'])]
    if lstm and row['model'] != zoo.BASELINE:
      row['lstm_chars_per_sec'] = lstm[0]['seqlab']['chars_per_sec']
      row['vs_lstm'] = row['seqlab']['chars_per_sec'] / row['lstm_chars_per_sec']


def zoo_sample_rows(specs, batches: list[int], length: int, repeats: int,
                    fields: dict, rows: list | None = None, saved=lambda: None,
                    errors: list | None = None) -> list[dict]:
  rows = [] if rows is None else rows
  errors = [] if errors is None else errors
  for model, size in specs:
    group = zoo.group(model, size, fields)
    model_length = min(length, group['context'] - 1) if 'context' in group else length
    for batch in batches:
      try:
        result = measure('sample', model=group, batch=batch, length=model_length,
                         repeats=repeats)
      except RuntimeError as e:
        errors.append({'kind': 'sample', 'model': model, 'size': size, 'group': group,
                       'batch': batch, 'error': str(e)})
        print(f'sample {model}:{size}: {e}', file=sys.stderr, flush=True)
        saved()
        continue
      rows.append({'model': model, 'size': size, 'group': group, 'batch': batch,
                   'describe': result.pop('model'), **result})
      saved()
      print(f'sample {model}:{size} batch {batch}: {result["chars_per_sec"]:,.0f} chars/s',
            file=sys.stderr, flush=True)
  return rows


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
  pairs = _parse_train(train_items)
  if set(sample_shapes) - set(SHAPES):
    raise app.UsageError(f'--sample {sample_shapes}: shapes are {sorted(SHAPES)}, or zoo rows '
                         'model:size')
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
    results['train'] = train_rows(pairs, ceiling, _STEPS.value, _TORCH.value, fields, _BF16.value,
                                  counts)
    print(train_table(results['train'], ceiling, dtype) + '\n')
  if sample_shapes:
    results['sample'] = sample_rows(sample_shapes, batches, fields, _SAMPLE_LENGTH.value,
                                    _SAMPLE_REPEATS.value)
    print(sample_table(results['sample']) + '\n')
  if zoo_train and any(model == 'mamba' for model, _ in zoo_train):
    results['bandwidth'] = measure('bandwidth', mib=256 if info['platform'] == 'cpu' else 4096)
    results['bandwidth_gbytes_per_s'] = results['bandwidth']['gbytes_per_s']

  def saved():  # the zoo rows take minutes each on a CPU: keep what a cut-short run measured
    if _OUT.value:
      pathlib.Path(_OUT.value).write_text(json.dumps(results, indent=2))
  if zoo_train:
    zoo_train_rows(zoo_train, ceiling, _STEPS.value, counts, fields, _SCAN.value,
                   _STUB_SCANS.value, _TORCH.value, _TORCH_COMPILE.value, _BF16.value,
                   rows=results.setdefault('zoo', []), saved=saved,
                   errors=results.setdefault('zoo_errors', []), batch_size=_ZOO_BATCH.value)
  if zoo_sample:
    zoo_sample_rows(zoo_sample, batches, _SAMPLE_LENGTH.value, _SAMPLE_REPEATS.value, fields,
                    rows=results.setdefault('zoo_sample', []), saved=saved,
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
