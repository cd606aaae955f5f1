"""The LSTM rows of `python -m seqlab.bench`: CELL:SHAPE, the default model's RNN, GRU or LSTM
at a shape of `SHAPES`, trained by seqlab and by its PyTorch peer (`torch_peers.torch_train`)
on the same batch, and sampled by seqlab; their tables.

A training row per device count (a CPU split into devices, `--cpu_devices`); PyTorch runs
once per row's cell and shape, on a CPU also under seqlab's malloc settings. GFLOP/s count 6 x
parameters x chars (the zoo rows count each model's matrices: `seqlab.bench.zoo`).
"""

import sys

from absl import app

from seqlab.bench import zoo
from seqlab.bench.spawn import measure

CELLS = ('rnn', 'gru', 'lstm')  # the default model's cells (`model.cell`), each with a PyTorch peer
SAMPLE_CELL = CELLS[-1]  # the sampling rows' (`--sample SHAPE`): the LSTM
# name -> (num_layers, hidden_size, batch, seq_len)
SHAPES = {
    'smoke': (2, 32, 16, 32),
    'S': (2, 128, 50, 50),  # char-rnn's default
    'M': (2, 256, 32, 256),
    'L': (3, 512, 64, 100),  # the post's model
}


def parse_train(items: list[str]) -> list[tuple[str, str]]:
  """`--train`'s items that are not zoo rows, as (cell, shape); a UsageError for a bad one."""
  pairs = [tuple(item.split(':')) for item in items]
  bad = [i for i, p in zip(items, pairs) if len(p) != 2 or p[1] not in SHAPES
         or p[0] not in CELLS]
  if bad:
    raise app.UsageError(f'--train {bad}: use cell:shape, cell in {"/".join(CELLS)}, shape in '
                         f'{sorted(SHAPES)}, or model:size, model in '
                         f'{", ".join(zoo.variant_names())}, size in {", ".join(zoo.SIZES)}')
  return pairs


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
  """Markdown: one line per training row, seqlab beside PyTorch."""
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
  """One row per (shape, batch): seqlab's sampling chars/s of the shape's LSTM."""
  rows = []
  for shape in shapes:
    layers, hidden, _, _ = SHAPES[shape]
    for batch in batches:
      result = measure('sample', cell=SAMPLE_CELL, num_layers=layers, hidden_size=hidden,
                       batch=batch, length=length, repeats=repeats, **fields)
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
    lines.append(f'| {r["shape"]} | {r["layers"]}x{r["hidden"]} {SAMPLE_CELL} | {r["batch"]} | '
                 f'{r["chars_per_sec"]:,.0f} | {r["first_call_s"]:.2f} |')
  return '\n'.join(lines)
