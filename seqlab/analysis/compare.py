"""Compare runs: `python -m seqlab.compare PATH [PATH ...] [--out DIR] [--x step|time|flops]`.

Each PATH is a run directory (it holds config.json) or a folder of them (a
sweep's --workdir, or runs/): `compare runs/grid`, `compare runs/a runs/b`,
`compare runs/grid runs/baseline`. Every run is listed once, by its folder name,
or by its path below the runs' common folder where two names would clash.

Prints a markdown table of the runs sorted by best val loss (the config values
that differ between runs as columns, a sweep's own keys first, then the final
metrics; the evaluation protocols' columns, `OPTIONAL_METRICS`, where a run has
them), and writes it as `compare.csv` with a PNG of every run's val-loss curve
into --out: `compare_val_loss.png` against steps (`--x step`, the default),
`compare_val_loss_time.png` against training minutes (`--x time`: the run's
`val/train_seconds`, the sum of its train-step times) or `compare_val_loss_flops.png`
against training FLOPs (`--x flops`: `val/train_flops`). A run without that tag
(one made before the runs recorded it) is left out of the picture with one note; if
no run has it, that is an error. Where runs recorded `val_loss_by_position` (the
`windows` protocol's mean loss at each position inside a window), it also writes
`compare_by_position.png`. Default --out: the sweep directory when the only PATH is a
folder of runs (as `compare SWEEP_DIR` always did), else the current directory; a run
directory is never written into.

Imports no JAX (nor anything that does): it only reads files.
"""

import csv
import math
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging

from seqlab.analysis import curves as run_curves
from seqlab.errors import SeqlabError
from seqlab.run import directory as rundir
from seqlab.run import metrics_writer
from seqlab.sweeps import halving  # stopped.json; JAX-free
from seqlab.sweeps.record import STATUS_FILENAME  # sweep.json; JAX-free

METRICS = ('best_val_loss', 'best_step', 'val_loss', 'val_bpc', 'test_loss', 'test_bpc',
           'chars_per_sec', 'num_params', 'wall_time')
# results.json fields of runs that evaluate under both protocols (`stream`: the split in one
# pass with carried state; `windows`: non-overlapping windows of eval.window chars, each from
# the zero state). Columns only where some run has them, so older runs' tables are unchanged.
OPTIONAL_METRICS = ('eval_protocol', 'eval_window', 'val_loss_stream', 'val_loss_windows',
                    'val_loss_windows_stderr', 'train_time', 'flops_per_char')
# A results field that repeats a config key: left out where that key is a column already.
_SAME_AS_CONFIG = {'eval_protocol': 'eval.protocol', 'eval_window': 'eval.window'}
CSV_FILENAME = 'compare.csv'


def default_out(paths) -> pathlib.Path:
  """Where compare writes without --out: the sweep directory when it is the only path given
  (and not itself a run), else the current directory."""
  paths = run_curves.as_list(paths)
  if len(paths) == 1 and paths[0].is_dir() and not run_curves.is_run(paths[0]):
    return paths[0]
  return pathlib.Path('.')


def _sweep_status(folder: pathlib.Path, cache: dict) -> dict:
  """The trials of `folder`'s sweep.json ({} if it is no sweep), read once per folder."""
  if folder not in cache:
    cache[folder] = (rundir.load_json(folder / STATUS_FILENAME) or {}).get('trials', {})
  return cache[folder]


def differing_keys(configs: list[dict]) -> list[str]:
  """The dotted config keys whose values are not the same in every run, in config order."""
  flat = [metrics_writer.flatten_config(c) for c in configs]
  keys = list(dict.fromkeys(k for f in flat for k in f))
  return [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]


def table_rows(paths) -> tuple[list[str], list[dict]]:
  """(columns, rows): one row per run of `paths`, sorted by best val loss (unfinished last).

  The `trial` column is the run's name (`run_names`); `status` is its sweep's
  record where it is a sweep's trial, else done/unfinished from results.json (or
  `stopped at rung N (step S)` from stopped.json: a trial that early stopping
  stopped, whose metrics are its val losses so far). The columns of
  `OPTIONAL_METRICS` come after `METRICS`, each where at least one run has a value.
  """
  runs = run_curves.collect(paths)
  cache = {}
  trials = [_sweep_status(r.parent.resolve(), cache).get(r.name, {}) for r in runs]
  configs = [rundir.load_json(r / rundir.CONFIG_FILENAME) for r in runs]
  # The sweeps' own keys first, in the order they declare them; then anything else that differs.
  declared = list(dict.fromkeys(k for t in trials for k in t.get('overrides', {})))
  differing = differing_keys(configs)
  swept = [k for k in declared if k in differing] + [k for k in differing if k not in declared]
  rows = []
  for run, name, trial, config in zip(runs, run_curves.run_names(runs), trials, configs):
    flat = metrics_writer.flatten_config(config)
    results = rundir.load_json(run / rundir.RESULTS_FILENAME)
    stopped = halving.read_stopped(run) if results is None else None
    results = results or stopped or {}
    own = stopped['status'] if stopped else 'done' if results else 'unfinished'
    row = {'trial': name, 'status': trial.get('status', own)}
    row.update({k: flat.get(k) for k in swept})
    row.update({m: results.get(m) for m in (*METRICS, *OPTIONAL_METRICS)})
    rows.append(row)
  rows.sort(key=lambda r: (r['best_val_loss'] is None, r['best_val_loss'] or 0.0, r['trial']))
  optional = [m for m in OPTIONAL_METRICS if _SAME_AS_CONFIG.get(m) not in swept
              and any(r[m] is not None for r in rows)]
  return ['trial', 'status', *swept, *METRICS, *optional], rows


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
  """The table; `val_loss_windows_stderr` is shown as `± stderr` in the val_loss_windows cell."""
  merged = 'val_loss_windows' in columns and 'val_loss_windows_stderr' in columns
  shown = [c for c in columns if not (merged and c == 'val_loss_windows_stderr')]

  def cell(row, column):
    text = _cell(row[column])
    if merged and column == 'val_loss_windows' and row[column] is not None \
        and row['val_loss_windows_stderr'] is not None:
      text += f' ± {row["val_loss_windows_stderr"]:.2g}'
    return text
  headers = ['val_loss_windows (± stderr)' if merged and c == 'val_loss_windows' else c
             for c in shown]
  lines = ['| ' + ' | '.join(headers) + ' |', '|' + '---|' * len(shown)]
  lines += ['| ' + ' | '.join(cell(r, c) for c in shown) + ' |' for r in rows]
  return '\n'.join(lines)


def write_csv(path: pathlib.Path, columns: list[str], rows: list[dict]) -> None:
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows({c: ('' if r[c] is None else r[c]) for c in columns} for r in rows)


def _stderr_note(text: str) -> None:
  print(text, file=sys.stderr)


def compare(paths, out: pathlib.Path | None = None, x: str = 'step', note=_stderr_note) -> str:
  """Writes the CSV and the PNG(s) into `out` (default: `default_out(paths)`); returns the table.

  `paths`: one path or a list of them, each a run directory or a folder of runs. `x`: the
  val-loss picture's axis (`curves.AXES`). Runs that lack its tag are left out of the picture and
  named in one call of `note`; a SeqlabError (before anything is written) if every run with a
  val-loss curve lacks it.
  """
  columns, rows = table_rows(paths)
  curves, missing = run_curves.axis_curves(paths, x)
  tag, _, _, png = run_curves.AXES[x]
  if missing and not curves:
    raise SeqlabError(f'--x {x}: no run has {tag} (runs record it since the evaluation '
                      f'protocols were added); left: {", ".join(missing)}. Use --x step')
  if missing:
    note(f'note: --x {x}: {len(missing)} run(s) without {tag} (made before it was recorded) '
         f'left out of {png}: {", ".join(missing)}')
  out = pathlib.Path(out) if out else default_out(paths)
  out.mkdir(parents=True, exist_ok=True)
  order = [r['trial'] for r in rows]
  write_csv(out / CSV_FILENAME, columns, rows)
  run_curves.plot_curves(out / png, curves, order, x, run_curves.protocols(paths))
  by_position = run_curves.by_position_curves(paths)
  if by_position:
    run_curves.plot_by_position(out / run_curves.BY_POSITION_FILENAME, by_position, order)
  return markdown(columns, rows)


def written(paths, out, x: str = 'step') -> list[pathlib.Path]:
  """The files `compare(paths, out, x)` writes."""
  out = pathlib.Path(out) if out else default_out(paths)
  files = [out / CSV_FILENAME, out / run_curves.AXES[x][3]]
  by_position = run_curves.by_position_curves(paths)
  return files + ([out / run_curves.BY_POSITION_FILENAME] if by_position else [])


_OUT = flags.DEFINE_string('out', None, 'Folder for compare.csv and the PNGs (default: the '
                           'sweep directory if it is the only PATH, else the current '
                           'directory).')
_X = flags.DEFINE_enum('x', 'step', list(run_curves.AXES),
                       'The val-loss picture\'s x axis: step, time '
                       '(training minutes, val/train_seconds) or flops (training FLOPs, '
                       'val/train_flops).')


def main(argv):
  logging.set_verbosity(logging.WARNING)  # TensorBoard's event reader logs every file at INFO
  paths = [pathlib.Path(a) for a in argv[1:]]
  if not paths:
    raise app.UsageError('usage: python -m seqlab.compare PATH [PATH ...] [--out DIR] '
                         '[--x step|time|flops]; each PATH a run directory or a folder of '
                         'them (a sweep directory)')
  try:
    table = compare(paths, _OUT.value, _X.value)
  except SeqlabError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(table)
  files = written(paths, _OUT.value, _X.value)
  print(f'\nwrote {", ".join(str(f) for f in files[:-1])} and {files[-1]}', file=sys.stderr)


def run() -> None:
  """The command: `python -m seqlab.compare`."""
  app.run(main)
