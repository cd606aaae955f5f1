"""Measuring the zoo rows of `python -m seqlab.bench` (`seqlab.bench.zoo`): their training,
with each model's declared PyTorch peer, and their sampling.

A row trains once per scan form (`--scan`, a model with a scan) and device count, and with
`--stub_scans` once more with its time loop stubbed (a model that declares `stub_scans`); a model whose declaration names a
`bench_peer` (`registry.Model`) has that PyTorch measurement timed beside its rows (`--torch`).
Every row is compared with the baseline's row of its size, batch and device count. Each
measurement runs in its own process (`spawn.measure`); one that fails is recorded and the
others run on.
"""

import sys

from seqlab.bench import zoo
from seqlab.bench.spawn import measure


def train_rows(specs, ceiling: float, steps: int, device_counts: list[int], fields: dict,
               scans: list[str], stub_scans: bool, with_torch: bool, torch_compile: bool,
               bf16: bool, rows: list | None = None, saved=lambda: None,
               errors: list | None = None, batch_size: int = 0) -> list[dict]:
  """One row per (variant, size, scan form, device count), and with `stub_scans` one more per
  scan model (scan removed); each beside the same-size baseline's chars/s on as many devices.
  Appends to `rows` and calls `saved()` after each (a run cut short keeps what it measured);
  a measurement that fails goes to `errors` instead, and the others still run."""
  rows = [] if rows is None else rows
  errors = [] if errors is None else errors
  for variant, size in specs:
    batch, seq_len = zoo.SIZES[size]
    batch = batch_size or batch
    forms = [(scan, False) for scan in (scans if zoo.has_scan(variant) and scans else [None])]
    if stub_scans and zoo.has_stub(variant):
      forms.append((None, True))
    for scan, stub in forms:
      group = zoo.group(variant, size, fields, scan)
      for count in device_counts:
        if count and batch % count:
          print(f'train {variant}:{size}: batch {batch} does not split over {count} devices; '
                'skipped', file=sys.stderr, flush=True)
          continue
        try:
          ours = measure('train', model=group, batch=batch, seq_len=seq_len, steps=steps,
                         cpu_devices=count, stub_scans=stub)
        except RuntimeError as e:  # one model failing (memory, a bug) does not lose the rest
          errors.append({'kind': 'train', 'model': variant, 'size': size, 'group': group,
                         'devices': count, 'stub_scans': stub, 'error': str(e)})
          print(f'train {variant}:{size}: {e}', file=sys.stderr, flush=True)
          saved()
          continue
        flop_count = ours['flops_per_char']
        gflops = flop_count['total'] * ours['chars_per_sec'] / 1e9
        row = {'model': variant, 'size': size, 'group': group, 'describe': ours['model'],
               'stub_scans': stub, 'batch': batch, 'seq_len': seq_len,
               'devices': ours['devices'], 'seqlab': ours, 'flops': flop_count,
               'gflops': gflops, 'of_ceiling': gflops / ceiling}
        if stub:
          row['describe'] += ', SCAN REMOVED (profile)'
        rows.append(row)
        set_vs_baseline(rows)
        saved()
        print(f'train {variant}:{size} ({row["describe"]}) on {ours["devices"]} device(s): '
              f'{ours["chars_per_sec"]:,.0f} chars/s, {row["of_ceiling"]:.0%} of the ceiling',
              file=sys.stderr, flush=True)
    peer_kind = zoo.model_of(variant).bench_peer
    if peer_kind and with_torch:
      _time_peer(peer_kind, variant, size, rows, zoo.group(variant, size, fields),
                 dict(batch=batch, seq_len=seq_len, steps=steps, bf16=bf16,
                      compile=torch_compile))
      saved()
  return rows


def _time_peer(kind: str, variant: str, size: str, rows: list[dict], group: dict,
               args: dict) -> None:
  """The PyTorch peer measurement `kind` on a row's model group, put beside each of its rows."""
  try:
    peer = measure(kind, **group, **args)
  except RuntimeError as e:
    peer = {'error': str(e)}
  for row in rows:
    if (row['model'], row['size']) == (variant, size):
      row['torch'] = peer
      if 'chars_per_sec' in peer:
        row['vs_torch'] = row['seqlab']['chars_per_sec'] / peer['chars_per_sec']


def set_vs_baseline(rows: list[dict]) -> None:
  """Each zoo row's speed against the baseline row (the LSTM) of its size, batch and device
  count, if measured: `lstm_chars_per_sec` and `vs_lstm`."""
  first = zoo.baseline()
  for row in rows:
    lstm = [r for r in rows if (r['model'], r['size'], r['devices'], r['batch']) ==
            (first, row['size'], row['devices'], row['batch'])]
    if lstm and row['model'] != first:
      row['lstm_chars_per_sec'] = lstm[0]['seqlab']['chars_per_sec']
      row['vs_lstm'] = row['seqlab']['chars_per_sec'] / row['lstm_chars_per_sec']


def memory_bound(specs) -> bool:
  """Whether a row's model is memory-bound (`registry.Model.memory_bound`): the bench then
  measures the memory bandwidth beside the rows."""
  return any(zoo.model_of(variant).memory_bound for variant, _ in specs)


def sample_rows(specs, batches: list[int], length: int, repeats: int,
                fields: dict, rows: list | None = None, saved=lambda: None,
                errors: list | None = None) -> list[dict]:
  """One row per (variant, size, batch): `length` characters a call, at most the model's
  window - 1 (a GPT: inside its KV cache)."""
  rows = [] if rows is None else rows
  errors = [] if errors is None else errors
  for variant, size in specs:
    group = zoo.group(variant, size, fields)
    window = zoo.window(group)
    model_length = length if window is None else min(length, window - 1)
    for batch in batches:
      try:
        result = measure('sample', model=group, batch=batch, length=model_length,
                         repeats=repeats)
      except RuntimeError as e:
        errors.append({'kind': 'sample', 'model': variant, 'size': size, 'group': group,
                       'batch': batch, 'error': str(e)})
        print(f'sample {variant}:{size}: {e}', file=sys.stderr, flush=True)
        saved()
        continue
      rows.append({'model': variant, 'size': size, 'group': group, 'batch': batch,
                   'describe': result.pop('model'), **result})
      saved()
      print(f'sample {variant}:{size} batch {batch}: {result["chars_per_sec"]:,.0f} chars/s',
            file=sys.stderr, flush=True)
  return rows
