"""The zoo rows of `python -m seqlab.bench`: every variant at about 0.8M and 5M parameters.

A row is `VARIANT:SIZE` (`--train mingru:0.8M,lstm:0.8M`, or `--zoo 0.8M,5M` for all of them),
VARIANT one of every registered variant (`registry.variants()`: each model's declaration in
seqlab/models/, or a model from outside the package once its module is imported), SIZE one of
`SIZES`. `--zoo` rows put the default model's first variant (the LSTM, the baseline every
row's speed is compared with) first, then the others in the registry's order. Every row trains
batch 32 x seq 256 (`tiny`: 8 x 32, for tests) with Adam and clipping 5, as the LSTM rows do,
on random tokens of tiny Shakespeare's 65 symbols, with dropout 0 and fp32. Its FLOPs per
character are counted per model (`seqlab.models.flops`), so its fraction of the matmul ceiling
is by its own count.

A row's model group is its variant's declared size (`registry.group_of`, `Variant.sizes`). At
0.8M that is the variant's configs/zoo.py model (tests/test_bench.py checks it), except where
the declaration's `zoo` differs: the GPT reads a window of 256 here (configs/zoo.py's CPU GPT:
64), so that it trains on the same batch 32 x seq 256 as the others; the 5M sizes scale those
up (layers and width, the rest as at 0.8M). The LSTM beside each size: 0.8M is
configs/shakespeare.py:cpu's 2x256 LSTM (0.87M; bench shape M), 5M the post's 3x512 LSTM
(5.4M; bench shape L's model). Importing this module imports no JAX; the rows' lookups import
the model modules (`seqlab.models.registry`).
"""

from seqlab.bench.timing import VOCAB
from seqlab.models import registry  # no JAX until a model is looked up

BATCH, SEQ_LEN = 32, 256
# batch, seq_len of each size every variant declares (tests/test_bench.py: declaration.SIZES)
SIZES = {'tiny': (8, 32), '0.8M': (BATCH, SEQ_LEN), '5M': (BATCH, SEQ_LEN)}


def baseline() -> str:
  """The variant every row is compared with: the default model's first (the LSTM)."""
  return next(iter(registry.get(registry.DEFAULT).variants))


def variant_names() -> list[str]:
  """Every registered variant, the baseline first."""
  first = baseline()
  return [first, *(name for name in registry.variants() if name != first)]


def model_of(variant: str) -> registry.Model:
  """The declaration of the model a variant belongs to."""
  return registry.variants()[variant][0]


def parse(item: str) -> tuple[str, str] | None:
  """'mingru:0.8M' -> ('mingru', '0.8M'); None if `item` is not a zoo row. An item whose second
  part is no size (an LSTM row, 'lstm:S') is told apart without looking the variants up."""
  parts = item.split(':')
  if len(parts) == 2 and parts[1] in SIZES and parts[0] in registry.variants():
    return parts[0], parts[1]
  return None


def rows_of(sizes: list[str]) -> list[tuple[str, str]]:
  """Every variant at each size, the baseline first (`--zoo SIZES`)."""
  return [(variant, size) for size in sizes for variant in variant_names()]


def group(variant: str, size: str, fields: dict | None = None, scan: str | None = None) -> dict:
  """The model group of a row, with those of `fields` that the model has, and `scan`."""
  base = registry.group_of(variant, size)
  known = set(model_of(variant).config_class.__dataclass_fields__)
  base.update({k: v for k, v in (fields or {}).items() if k in known})
  if scan and 'scan' in known:
    base['scan'] = scan
  return base


def has_scan(variant: str) -> bool:
  """Whether the model has two forms of its scan (`--scan`): its declared `equivalent`."""
  return 'scan' in model_of(variant).equivalent


def has_stub(variant: str) -> bool:
  """Whether the model declares a stub of its time loop (`--stub_scans`)."""
  return model_of(variant).stub_scans is not None


def window(model_group: dict) -> int | None:
  """The tokens a row's model can condition on (None: unbounded); a sampling call of a model
  with a window stays inside it (its KV cache)."""
  return registry.window(registry.config_of(model_group, VOCAB))


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
      lines.append(f'| ↳ {peer.get("label", "PyTorch peer")} | {peer.get("num_params", 0):,} | '
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
  """(the items that are not zoo rows, the zoo rows as (variant, size))."""
  rows = [parse(item) for item in items]
  return [i for i, r in zip(items, rows) if r is None], [r for r in rows if r is not None]
