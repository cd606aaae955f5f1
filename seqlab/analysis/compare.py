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
# results.json fields of runs that evaluate under both protocols (`stream`: the split in one
# pass with carried state; `windows`: non-overlapping windows of eval.window chars, each from
# the zero state). Columns only where some run has them, so older runs' tables are unchanged.
OPTIONAL_METRICS = ('eval_protocol', 'eval_window', 'val_loss_stream', 'val_loss_windows',
                    'val_loss_windows_stderr', 'train_time', 'flops_per_char')
# A results field that repeats a config key: left out where that key is a column already.
_SAME_AS_CONFIG = {'eval_protocol': 'eval.protocol', 'eval_window': 'eval.window'}
CSV_FILENAME = 'compare.csv'
PNG_FILENAME = 'compare_val_loss.png'
BY_POSITION_FILENAME = 'compare_by_position.png'

# --x: what the val-loss picture's x axis is. (tag it is read from, None: the step itself;
# scale applied to the tag's value; axis label; the picture's file name.)
AXES = {
    'step': (None, 1.0, 'training step', PNG_FILENAME),
    'time': ('val/train_seconds', 1 / 60, 'training time (minutes; train steps only, without '
             'compilation, evaluation and checkpoints)', 'compare_val_loss_time.png'),
    'flops': ('val/train_flops', 1.0, 'training FLOPs (steps x batch x seq_len x FLOPs/char)',
              'compare_val_loss_flops.png'),
}
VAL_TAG = 'val/loss'


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
  stopped, whose metrics are its val losses so far). The columns of
  `OPTIONAL_METRICS` come after `METRICS`, each where at least one run has a value.
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


def read_scalars(run: pathlib.Path, tags=None) -> dict[str, list[tuple[int, float]]]:
  """`run`'s TensorBoard scalars as {tag: [(step, value), ...]} (only `tags`, if given)."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  events = event_accumulator.EventAccumulator(str(run), size_guidance={'scalars': 0})
  events.Reload()
  return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
          for tag in events.Tags()['scalars'] if tags is None or tag in tags}


def axis_curves(paths, x: str = 'step') -> tuple[dict[str, list[tuple[float, float]]], list[str]]:
  """Each run's val/loss curve against axis `x` (an `AXES` key): ({name: [(x, loss)]}, the
  names of runs left out because they lack the axis's tag).

  `time` is minutes of training (`val/train_seconds` / 60) and `flops` training FLOPs
  (`val/train_flops`), each matched to val/loss by step; a val loss at a step without that
  value is dropped. A run without val/loss (unfinished before its first evaluation) has no
  curve and is not counted as lacking the tag.
  """
  if x not in AXES:
    raise SeqlabError(f'--x {x}: use one of {", ".join(AXES)}')
  tag, scale, _, _ = AXES[x]
  runs = collect(paths)
  curves, missing = {}, []
  for run, name in zip(runs, run_names(runs)):
    scalars = read_scalars(run, {VAL_TAG, tag})
    if VAL_TAG not in scalars:
      continue
    if tag is None:
      curves[name] = [(float(step), loss) for step, loss in scalars[VAL_TAG]]
    elif tag not in scalars:
      missing.append(name)
    else:
      at = dict(scalars[tag])
      curves[name] = [(at[step] * scale, loss) for step, loss in scalars[VAL_TAG] if step in at]
  return curves, missing


def val_curves(paths) -> dict[str, list[tuple[int, float]]]:
  """Each run's val/loss curve read back from its TensorBoard event files, by run name."""
  return {name: [(int(s), loss) for s, loss in curve]
          for name, curve in axis_curves(paths, 'step')[0].items()}


def protocols(paths) -> dict[str, str | None]:
  """Each run's `eval.protocol` (what its val/loss is), None for runs made before it existed."""
  runs = collect(paths)
  return {name: (rundir.load_json(run / rundir.CONFIG_FILENAME) or {}).get('eval', {})
          .get('protocol') for run, name in zip(runs, run_names(runs))}


def picture_title(protocol_of: dict, names: list[str]) -> tuple[str, bool]:
  """(the picture's title, whether each curve's label must name its protocol)."""
  found = {protocol_of.get(n) for n in names}
  if len(found) > 1:
    return 'val/loss: each run\'s own protocol (in its label)', True
  (protocol,) = found or {None}
  if protocol is None:
    return 'val/loss (evaluation protocol not recorded: runs made before eval.protocol)', False
  return f'val/loss: {protocol} protocol', False


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _style(i: int, name: str, styles: dict | None) -> dict:
  """Matplotlib line options of the i-th curve: `styles[name]` if given, else the colour
  cycle, with another line style for each further 10 curves (colours repeat after 10)."""
  if styles and name in styles:
    return styles[name]
  return {'linestyle': ('-', '--', ':', '-.')[i // 10 % 4]}


def plot_curves(path: pathlib.Path, curves: dict, order: list[str], x: str = 'step',
                protocol_of: dict | None = None, styles: dict | None = None) -> None:
  """The val-loss picture: one curve per run of `curves` (`axis_curves`), in `order`;
  `styles`: matplotlib line options by run name (e.g. a colour per model)."""
  plt = _pyplot()
  names = [n for n in order if n in curves]
  title, label_protocol = picture_title(protocol_of or {}, names)
  fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
  for i, name in enumerate(names):
    xs, losses = zip(*curves[name]) if curves[name] else ((), ())
    label = f'{name} ({(protocol_of or {}).get(name) or "not recorded"})' if label_protocol \
        else name
    ax.plot(xs, losses, marker='.', label=label, **_style(i, name, styles))
  ax.set_xlabel(AXES[x][2])
  ax.set_ylabel('val loss (nats/char)')
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  if names:
    ax.legend(fontsize=7, loc='upper right')
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def by_position_curves(paths) -> dict[str, list[float]]:
  """Each run's `val_loss_by_position` from results.json (runs without it left out; a null
  position, one that no window reached, is NaN: a gap in the picture)."""
  runs = collect(paths)
  curves = {}
  for run, name in zip(runs, run_names(runs)):
    values = (rundir.load_json(run / rundir.RESULTS_FILENAME) or {}).get('val_loss_by_position')
    if values:  # null: a position that a split shorter than the window never reaches
      curves[name] = [math.nan if v is None else float(v) for v in values]
  return curves


def plot_by_position(path: pathlib.Path, curves: dict, order: list[str],
                     styles: dict | None = None) -> None:
  """Loss against position inside the window, one curve per run of `by_position_curves`."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
  for i, name in enumerate([n for n in order if n in curves]):
    ax.plot(range(len(curves[name])), curves[name], label=f'{name} (window {len(curves[name])})',
            **_style(i, name, styles))
  ax.set_xlabel('position inside the window (0: the first prediction, from the zero state)')
  ax.set_ylabel('val loss (nats/char), mean over windows')
  ax.set_title('val loss by position: windows protocol', fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc='upper right')
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def _stderr_note(text: str) -> None:
  print(text, file=sys.stderr)


def compare(paths, out: pathlib.Path | None = None, x: str = 'step', note=_stderr_note) -> str:
  """Writes the CSV and the PNG(s) into `out` (default: `default_out(paths)`); returns the table.

  `paths`: one path or a list of them, each a run directory or a folder of runs. `x`: the
  val-loss picture's axis (`AXES`). Runs that lack its tag are left out of the picture and
  named in one call of `note`; a SeqlabError (before anything is written) if every run with a
  val-loss curve lacks it.
  """
  columns, rows = table_rows(paths)
  curves, missing = axis_curves(paths, x)
  tag, _, _, png = AXES[x]
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
  plot_curves(out / png, curves, order, x, protocols(paths))
  by_position = by_position_curves(paths)
  if by_position:
    plot_by_position(out / BY_POSITION_FILENAME, by_position, order)
  return markdown(columns, rows)


def written(paths, out, x: str = 'step') -> list[pathlib.Path]:
  """The files `compare(paths, out, x)` writes."""
  out = pathlib.Path(out) if out else default_out(paths)
  files = [out / CSV_FILENAME, out / AXES[x][3]]
  return files + ([out / BY_POSITION_FILENAME] if by_position_curves(paths) else [])


_OUT = flags.DEFINE_string('out', None, 'Folder for compare.csv and the PNGs (default: the '
                           'sweep directory if it is the only PATH, else the current '
                           'directory).')
_X = flags.DEFINE_enum('x', 'step', list(AXES), 'The val-loss picture\'s x axis: step, time '
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
