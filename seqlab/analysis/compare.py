"""Compare the runs of a sweep: `python -m seqlab.compare SWEEP_DIR [--out DIR]`.

Prints a markdown table of the trials sorted by best val loss (the config
values that differ between trials as columns, then the final metrics), and
writes it as `compare.csv` with a PNG of every trial's val-loss curve
(`compare_val_loss.png`) into --out (default: SWEEP_DIR), for a README or a
paper without TensorBoard. Any folder of run directories works, sweep or not.
"""

import csv
import math
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging

from seqlab.run import metrics_writer
from seqlab.run import directory as rundir
from seqlab.sweeps import runner as sweep_run
from seqlab.errors import SeqlabError

METRICS = ('best_val_loss', 'best_step', 'val_loss', 'val_bpc', 'test_loss', 'test_bpc',
           'chars_per_sec', 'num_params', 'wall_time')
CSV_FILENAME = 'compare.csv'
PNG_FILENAME = 'compare_val_loss.png'


def find_runs(sweep_dir: pathlib.Path) -> list[pathlib.Path]:
  """The run directories directly inside `sweep_dir` (those with a config.json)."""
  return sorted(p for p in pathlib.Path(sweep_dir).iterdir()
                if p.is_dir() and (p / rundir.CONFIG_FILENAME).exists())


def differing_keys(configs: list[dict]) -> list[str]:
  """The dotted config keys whose values are not the same in every run, in config order."""
  flat = [metrics_writer.flatten_config(c) for c in configs]
  keys = list(dict.fromkeys(k for f in flat for k in f))
  return [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]


def table_rows(sweep_dir: pathlib.Path) -> tuple[list[str], list[dict]]:
  """(columns, rows): one row per run, sorted by best val loss (unfinished runs last)."""
  runs = find_runs(sweep_dir)
  if not runs:
    raise SeqlabError(f'{sweep_dir} holds no run directories (folders with config.json)')
  status = (rundir.load_json(pathlib.Path(sweep_dir) / sweep_run.STATUS_FILENAME) or {}).get(
      'trials', {})
  configs = [rundir.load_json(r / rundir.CONFIG_FILENAME) for r in runs]
  # The sweep's own keys first, in the order it declares them; then anything else that differs.
  declared = list(dict.fromkeys(k for t in status.values() for k in t.get('overrides', {})))
  differing = differing_keys(configs)
  swept = [k for k in declared if k in differing] + [k for k in differing if k not in declared]
  rows = []
  for run, config in zip(runs, configs):
    flat = metrics_writer.flatten_config(config)
    results = rundir.load_json(run / rundir.RESULTS_FILENAME) or {}
    row = {'trial': run.name,
           'status': status.get(run.name, {}).get('status', 'done' if results else 'unfinished')}
    row.update({k: flat.get(k) for k in swept})
    row.update({m: results.get(m) for m in METRICS})
    rows.append(row)
  rows.sort(key=lambda r: (r['best_val_loss'] is None, r['best_val_loss'] or 0.0, r['trial']))
  return ['trial', 'status', *swept, *METRICS], rows


def _cell(value) -> str:
  if value is None:
    return '-'
  if isinstance(value, int) and not isinstance(value, bool):
    return f'{value:,}'
  if isinstance(value, float):
    if math.isnan(value):
      return 'nan'
    return f'{value:,.0f}' if abs(value) >= 1000 else f'{value:.4g}'
  return str(value)


def markdown(columns: list[str], rows: list[dict]) -> str:
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  lines += ['| ' + ' | '.join(_cell(r[c]) for c in columns) + ' |' for r in rows]
  return '\n'.join(lines)


def write_csv(path: pathlib.Path, columns: list[str], rows: list[dict]) -> None:
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows({c: ('' if r[c] is None else r[c]) for c in columns} for r in rows)


def val_curves(sweep_dir: pathlib.Path) -> dict[str, list[tuple[int, float]]]:
  """Each run's val/loss curve read back from its TensorBoard event files."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  curves = {}
  for run in find_runs(sweep_dir):
    events = event_accumulator.EventAccumulator(str(run), size_guidance={'scalars': 0})
    events.Reload()
    if 'val/loss' in events.Tags()['scalars']:
      curves[run.name] = [(e.step, e.value) for e in events.Scalars('val/loss')]
  return curves


def plot_curves(path: pathlib.Path, curves: dict, order: list[str]) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
  for name in [n for n in order if n in curves]:
    steps, losses = zip(*curves[name])
    ax.plot(steps, losses, marker='.', label=name)
  ax.set_xlabel('step')
  ax.set_ylabel('val loss (nats/char)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc='upper right')
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def compare(sweep_dir: pathlib.Path, out: pathlib.Path | None = None) -> str:
  """Writes the CSV and the PNG into `out` (default: sweep_dir); returns the markdown table."""
  sweep_dir = pathlib.Path(sweep_dir)
  if not sweep_dir.is_dir():
    raise SeqlabError(f'{sweep_dir} is not a directory; give the --workdir of a sweep')
  out = pathlib.Path(out) if out else sweep_dir
  out.mkdir(parents=True, exist_ok=True)
  columns, rows = table_rows(sweep_dir)
  write_csv(out / CSV_FILENAME, columns, rows)
  plot_curves(out / PNG_FILENAME, val_curves(sweep_dir), [r['trial'] for r in rows])
  return markdown(columns, rows)


_OUT = flags.DEFINE_string('out', None, 'Folder for compare.csv and compare_val_loss.png '
                           '(default: the sweep directory).')


def main(argv):
  logging.set_verbosity(logging.WARNING)  # TensorBoard's event reader logs every file at INFO
  if len(argv) != 2:
    raise app.UsageError('usage: python -m seqlab.compare SWEEP_DIR [--out DIR]')
  try:
    table = compare(pathlib.Path(argv[1]), _OUT.value)
  except SeqlabError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(table)
  out = pathlib.Path(_OUT.value or argv[1])
  print(f'\nwrote {out / CSV_FILENAME} and {out / PNG_FILENAME}', file=sys.stderr)


def run() -> None:
  """The command: `python -m seqlab.compare`."""
  app.run(main)
