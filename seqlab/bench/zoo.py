"""The zoo rows of `python -m seqlab.bench`: every model at about 0.8M and 5M parameters.

A row is `MODEL:SIZE` (`--train mingru:0.8M,lstm:0.8M`, or `--zoo 0.8M,5M` for all of them),
MODEL one of `MODELS`, SIZE one of `SIZES`. Every row trains batch 32 x seq 256 (`tiny`: 8 x
32, for tests) with Adam and clipping 5, as the LSTM rows do, on random tokens of tiny
Shakespeare's 65 symbols, with dropout 0 and fp32. Its FLOPs per character are counted per
model (`seqlab.models.flops`), so its fraction of the matmul ceiling is by its own count.

The 0.8M groups are configs/zoo.py's (the lead's choice; tests/test_bench.py checks they still
are), except that the GPT reads a window of 256 (zoo.py's CPU GPT: 64) so that it trains on the
same batch 32 x seq 256 as the others; the 5M groups scale those up (layers and width, the
rest as at 0.8M). The LSTM beside each size: 0.8M is configs/shakespeare.py:cpu's 2x256 LSTM
(0.87M; bench shape M), 5M the post's 3x512 LSTM (5.4M; bench shape L's model).
"""

BATCH, SEQ_LEN = 32, 256
SIZES = {'tiny': (8, 32), '0.8M': (BATCH, SEQ_LEN), '5M': (BATCH, SEQ_LEN)}  # batch, seq_len

_MIN = dict(name='min_rnn', expansion=1.0, mlp_ratio=4.0, dropout=0.0, scan='sequential',
            log_space=True)
_HAWK = dict(name='hawk', lru_width=0, conv_width=4, mlp_expansion=3, dropout=0.0,
             scan='sequential')
_MAMBA = dict(name='mamba', d_state=16, d_conv=4, expand=2, dt_rank=0, dropout=0.0,
              scan='sequential')
_GPT = dict(name='gpt', dropout=0.0, bias=False)

# model -> size -> the config's `model` group (registry.config_of). Parameters (all of them;
# seqlab.models.flops.matmul_params for those the FLOP count uses): in the comments.
MODELS = {
    'lstm': {
        'tiny': dict(name='char_rnn', cell='lstm', num_layers=2, hidden_size=16),
        '0.8M': dict(name='char_rnn', cell='lstm', num_layers=2, hidden_size=256),  # 871,745
        '5M': dict(name='char_rnn', cell='lstm', num_layers=3, hidden_size=512),  # 5,415,489
    },
    'mingru': {
        'tiny': dict(_MIN, cell='mingru', num_layers=2, width=16),
        '0.8M': dict(_MIN, cell='mingru', num_layers=2, width=200),  # 829,865
        '5M': dict(_MIN, cell='mingru', num_layers=4, width=352),  # 5,015,009
    },
    'minlstm': {
        'tiny': dict(_MIN, cell='minlstm', num_layers=2, width=16),
        '0.8M': dict(_MIN, cell='minlstm', num_layers=2, width=192),  # 840,065
        '5M': dict(_MIN, cell='minlstm', num_layers=4, width=336),  # 5,024,945
    },
    'hawk': {
        'tiny': dict(_HAWK, num_layers=2, width=16),
        '0.8M': dict(_HAWK, num_layers=2, width=168),  # 808,080
        '5M': dict(_HAWK, num_layers=4, width=296),  # 4,949,712
    },
    'mamba': {
        'tiny': dict(_MAMBA, num_layers=2, width=16),
        '0.8M': dict(_MAMBA, num_layers=4, width=168),  # 792,624
        '5M': dict(_MAMBA, num_layers=8, width=304),  # 4,910,816
    },
    'gpt': {
        'tiny': dict(_GPT, num_layers=2, num_heads=2, width=16, context=32),
        '0.8M': dict(_GPT, num_layers=4, num_heads=4, width=128, context=256),  # 828,672
        '5M': dict(_GPT, num_layers=6, num_heads=4, width=256, context=256),  # 4,804,096
    },
}
BASELINE = 'lstm'


def parse(item: str) -> tuple[str, str] | None:
  """'mingru:0.8M' -> ('mingru', '0.8M'); None if `item` is not a zoo row."""
  parts = item.split(':')
  if len(parts) == 2 and parts[0] in MODELS and parts[1] in SIZES:
    return parts[0], parts[1]
  return None


def rows_of(sizes: list[str]) -> list[tuple[str, str]]:
  """Every model at each size, the LSTM first (`--zoo SIZES`)."""
  return [(model, size) for size in sizes for model in MODELS]


def group(model: str, size: str, fields: dict | None = None, scan: str | None = None) -> dict:
  """The model group of a row, with those of `fields` that the model has, and `scan`."""
  from seqlab.models import registry  # pylint: disable=g-import-not-at-top
  base = dict(MODELS[model][size])
  known = {f for f in registry.FAMILIES[base['name']].config_class.__dataclass_fields__}
  base.update({k: v for k, v in (fields or {}).items() if k in known})
  if scan and 'scan' in known:
    base['scan'] = scan
  return base


def has_scan(model: str) -> bool:
  return 'scan' in MODELS[model]['tiny']


def label(row: dict) -> str:
  scan = f', {row["group"]["scan"]} scan' if 'scan' in row['group'] else ''
  return f'{row["model"]}:{row["size"]} ({row["describe"]}{scan})'


def table(rows: list[dict], samples: list[dict], ceiling: float, dtype: str = 'fp32') -> str:
  """Markdown: one line per trained row, sampling chars/s of the same model and size beside."""
  sampled = {(s['model'], s['size'], s['batch']): s for s in samples}
  batches = sorted({s['batch'] for s in samples})
  on_device = any(r['seqlab'].get('peak_device_mib') is not None for r in rows)
  memory = 'peak device MiB' if on_device else 'peak RSS MiB'
  sample_header = ''.join(f' sample b{b} chars/s |' for b in batches)
  lines = [f'Zoo training ({dtype} matmul ceiling measured in this run: {ceiling:,.0f} GFLOP/s; '
           'FLOPs per character by each model\'s own count, seqlab/models/flops.py)', '',
           '| row | params (matmul) | batch x seq | devices | chars/s | vs LSTM | FLOPs/char | '
           f'GFLOP/s | of ceiling | compile s | {memory} |{sample_header}',
           '|---|---:|---|' + '---:|' * (8 + len(batches))]
  for r in rows:
    ours = r['seqlab']
    key = 'peak_device_mib' if on_device else 'peak_rss_mib'
    peak = f'{ours[key]:,.0f}' if ours.get(key) is not None else '-'
    vs = f'{r["vs_lstm"]:.2f}x' if 'vs_lstm' in r else '-'
    cells = ''.join(
        f' {sampled[(r["model"], r["size"], b)]["chars_per_sec"]:,.0f} |'
        if (r['model'], r['size'], b) in sampled else ' - |' for b in batches)
    lines.append(
        f'| {label(r)} | {ours["num_params"]:,} ({r["flops"]["matmul_params"]:,}) | '
        f'{r["batch"]} x {r["seq_len"]} | {r["devices"]} | {ours["chars_per_sec"]:,.0f} | {vs} | '
        f'{r["flops"]["total"]:,} | {r["gflops"]:.1f} | {r["of_ceiling"]:.0%} | '
        f'{ours["compile_s"]:.1f} | {peak} |{cells}')
    if 'torch' in r:
      peer = r['torch']
      speed = f'{peer["chars_per_sec"]:,.0f} chars/s (seqlab {r["vs_torch"]:.2f}x)' \
          if 'chars_per_sec' in peer else peer.get('missing', peer.get('error', 'not run'))
      lines.append(f'| ↳ PyTorch nanoGPT-style peer | {peer.get("num_params", 0):,} | '
                   f'{r["batch"]} x {r["seq_len"]} | 1 | {speed} |' + ' |' * (6 + len(batches)))
  return '\n'.join(lines)


def sample_only_table(samples: list[dict], trained: set) -> str:
  """Sampling of zoo models that were not also trained in this run."""
  rest = [s for s in samples if (s['model'], s['size']) not in trained]
  if not rest:
    return ''
  lines = ['Zoo sampling', '', '| row | batch | length | chars/s | first call (compile) s |',
           '|---|---:|---:|---:|---:|']
  for s in rest:
    lines.append(f'| {s["model"]}:{s["size"]} ({s["describe"]}) | {s["batch"]} | '
                 f'{s["length"]} | {s["chars_per_sec"]:,.0f} | {s["first_call_s"]:.2f} |')
  return '\n'.join(lines)


def split_rows(items: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """(the items that are not zoo rows, the zoo rows as (model, size))."""
  rows = [parse(item) for item in items]
  return [i for i, r in zip(items, rows) if r is None], [r for r in rows if r is not None]
