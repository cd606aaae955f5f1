"""Compare runs: `python -m seqlab.compare PATH [PATH ...] [--out DIR]`.

Each PATH is a run directory (it holds config.json) or a folder of them (a
sweep's --workdir, or runs/): `compare runs/grid`, `compare runs/a runs/b`,
`compare runs/grid runs/baseline`. Every run is listed once, by its folder name,
or by its path below the runs' common folder where two names would clash.

Prints a markdown table of the runs sorted by best val loss (the config values
that differ between runs as columns, a sweep's own keys first, then the final
metrics), and writes it as `compare.csv` with a PNG of every run's val-loss
curve (`compare_val_loss.png`) into --out. Default --out: the sweep directory
when the only PATH is a folder of runs (as `compare SWEEP_DIR` always did),
else the current directory; a run directory is never written into.

Imports no JAX (nor anything that does): it only reads files.
"""

import csv
import math
import os
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging

from seqlab.errors import SeqlabError
from seqlab.run import directory as rundir
from seqlab.run import metrics_writer
from seqlab.sweeps import halving  # stopped.json; JAX-free
from seqlab.sweeps.record import STATUS_FILENAME  # sweep.json; JAX-free

METRICS = ('best_val_loss', 'best_step', 'val_loss', 'val_bpc', 'test_loss', 'test_bpc',
           'chars_per_sec', 'num_params', 'wall_time')
CSV_FILENAME = 'compare.csv'
PNG_FILENAME = 'compare_val_loss.png'


def _is_run(path: pathlib.Path) -> bool:
  return path.is_dir() and (path / rundir.CONFIG_FILENAME).exists()


def find_runs(sweep_dir: pathlib.Path) -> list[pathlib.Path]:
  """The run directories directly inside `sweep_dir` (those with a config.json)."""
  return sorted(p for p in pathlib.Path(sweep_dir).iterdir() if _is_run(p))


def _as_list(paths) -> list[pathlib.Path]:
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  return [pathlib.Path(p) for p in paths]


def collect(paths) -> list[pathlib.Path]:
  """The run directories of `paths` (runs, or folders of runs), each once, in given order."""
  paths = _as_list(paths)
  if not paths:
    raise SeqlabError('give at least one run directory or folder of runs')
  runs, seen = [], set()
  for path in paths:
    if not path.is_dir():
      raise SeqlabError(f'{path} is not a directory; give run directories or folders of them '
                        '(a sweep\'s --workdir)')
    found = [path] if _is_run(path) else find_runs(path)
    if not found:
      raise SeqlabError(f'{path} holds no run directories (folders with config.json) and is '
                        'not one')
    for run in found:
      if run.resolve() not in seen:
        seen.add(run.resolve())
        runs.append(run)
  return runs


def run_names(runs: list[pathlib.Path]) -> list[str]:
  """Folder names, or paths below the runs' common folder where folder names clash."""
  names = [r.name for r in runs]
  if len(set(names)) == len(names):
    return names
  resolved = [str(r.resolve()) for r in runs]
  common = os.path.commonpath(resolved)
  return [pathlib.Path(os.path.relpath(r, common)).as_posix() for r in resolved]


def default_out(paths) -> pathlib.Path:
  """Where compare writes without --out: the sweep directory when it is the only path given
  (and not itself a run), else the current directory."""
  paths = _as_list(paths)
  if len(paths) == 1 and paths[0].is_dir() and not _is_run(paths[0]):
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
  stopped, whose metrics are its val losses so far).
  """
  runs = collect(paths)
  cache = {}
  trials = [_sweep_status(r.parent.resolve(), cache).get(r.name, {}) for r in runs]
  configs = [rundir.load_json(r / rundir.CONFIG_FILENAME) for r in runs]
  # The sweeps' own keys first, in the order they declare them; then anything else that differs.
  declared = list(dict.fromkeys(k for t in trials for k in t.get('overrides', {})))
  differing = differing_keys(configs)
  swept = [k for k in declared if k in differing] + [k for k in differing if k not in declared]
  rows = []
  for run, name, trial, config in zip(runs, run_names(runs), trials, configs):
    flat = metrics_writer.flatten_config(config)
    results = rundir.load_json(run / rundir.RESULTS_FILENAME)
    stopped = halving.read_stopped(run) if results is None else None
    results = results or stopped or {}
    own = stopped['status'] if stopped else 'done' if results else 'unfinished'
    row = {'trial': name, 'status': trial.get('status', own)}
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


def val_curves(paths) -> dict[str, list[tuple[int, float]]]:
  """Each run's val/loss curve read back from its TensorBoard event files, by run name."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  runs = collect(paths)
  curves = {}
  for run, name in zip(runs, run_names(runs)):
    events = event_accumulator.EventAccumulator(str(run), size_guidance={'scalars': 0})
    events.Reload()
    if 'val/loss' in events.Tags()['scalars']:
      curves[name] = [(e.step, e.value) for e in events.Scalars('val/loss')]
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
  if curves:
    ax.legend(fontsize=7, loc='upper right')
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def compare(paths, out: pathlib.Path | None = None) -> str:
  """Writes the CSV and the PNG into `out` (default: `default_out(paths)`); returns the table.

  `paths`: one path or a list of them, each a run directory or a folder of runs.
  """
  columns, rows = table_rows(paths)
  out = pathlib.Path(out) if out else default_out(paths)
  out.mkdir(parents=True, exist_ok=True)
  write_csv(out / CSV_FILENAME, columns, rows)
  plot_curves(out / PNG_FILENAME, val_curves(paths), [r['trial'] for r in rows])
  return markdown(columns, rows)


_OUT = flags.DEFINE_string('out', None, 'Folder for compare.csv and compare_val_loss.png '
                           '(default: the sweep directory if it is the only PATH, else the '
                           'current directory).')


def main(argv):
  logging.set_verbosity(logging.WARNING)  # TensorBoard's event reader logs every file at INFO
  paths = [pathlib.Path(a) for a in argv[1:]]
  if not paths:
    raise app.UsageError('usage: python -m seqlab.compare PATH [PATH ...] [--out DIR]; each '
                         'PATH a run directory or a folder of them (a sweep directory)')
  try:
    table = compare(paths, _OUT.value)
  except SeqlabError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(table)
  out = pathlib.Path(_OUT.value) if _OUT.value else default_out(paths)
  print(f'\nwrote {out / CSV_FILENAME} and {out / PNG_FILENAME}', file=sys.stderr)


def run() -> None:
  """The command: `python -m seqlab.compare`."""
  app.run(main)
