"""Run directories and their curves, for `seqlab.compare` and studies that draw runs.

Finds the runs under any mix of run and sweep directories (`collect`, `run_names`), reads
their val-loss curves from TensorBoard event files against steps, training minutes or
training FLOPs (`axis_curves`, `AXES`), and their loss by position in a window from
results.json (`by_position_curves`), and draws both as PNGs (matplotlib, imported when a
picture is drawn). Imports no JAX: it only reads files.
"""

import math
import os
import pathlib

from seqlab.errors import SeqlabError
from seqlab.run import directory as rundir

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


def is_run(path: pathlib.Path) -> bool:
  return path.is_dir() and (path / rundir.CONFIG_FILENAME).exists()


def find_runs(sweep_dir: pathlib.Path) -> list[pathlib.Path]:
  """The run directories directly inside `sweep_dir` (those with a config.json)."""
  return sorted(p for p in pathlib.Path(sweep_dir).iterdir() if is_run(p))


def as_list(paths) -> list[pathlib.Path]:
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  return [pathlib.Path(p) for p in paths]


def collect(paths) -> list[pathlib.Path]:
  """The run directories of `paths` (runs, or folders of runs), each once, in given order."""
  paths = as_list(paths)
  if not paths:
    raise SeqlabError('give at least one run directory or folder of runs')
  runs, seen = [], set()
  for path in paths:
    if not path.is_dir():
      raise SeqlabError(f'{path} is not a directory; give run directories or folders of them '
                        '(a sweep\'s --workdir)')
    found = [path] if is_run(path) else find_runs(path)
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


def read_scalars(run: pathlib.Path, tags=None) -> dict[str, list[tuple[int, float]]]:
  """`run`'s TensorBoard scalars as {tag: [(step, value), ...]} (only `tags`, if given)."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  events = event_accumulator.EventAccumulator(str(run), size_guidance={'scalars': 0})
  events.Reload()
  return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
          for tag in events.Tags()['scalars'] if tags is None or tag in tags}


def axis_curves(paths, x: str = 'step', val_tag: str = VAL_TAG
                ) -> tuple[dict[str, list[tuple[float, float]]], list[str]]:
  """Each run's val/loss curve (or `val_tag`'s, e.g. val/loss_windows) against axis `x` (an
  `AXES` key): ({name: [(x, loss)]}, the names of runs left out because they lack the axis's
  tag).

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
    scalars = read_scalars(run, {val_tag, tag})
    if val_tag not in scalars:
      continue
    if tag is None:
      curves[name] = [(float(step), loss) for step, loss in scalars[val_tag]]
    elif tag not in scalars:
      missing.append(name)
    else:
      at = dict(scalars[tag])
      curves[name] = [(at[step] * scale, loss) for step, loss in scalars[val_tag] if step in at]
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
                protocol_of: dict | None = None, styles: dict | None = None,
                title: str | None = None, xlabel: str | None = None,
                y_top: float | None = None) -> None:
  """The val-loss picture: one curve per run of `curves` (`axis_curves`), in `order`;
  `styles`: matplotlib line options by run name (e.g. a colour per model); `title`: the
  curves' protocol where they are not each run's val/loss; `xlabel`: where the x values are
  not axis `x`'s own; `y_top`: the y axis' top where higher losses would squash the rest."""
  plt = _pyplot()
  names = [n for n in order if n in curves]
  if title is None:
    title, label_protocol = picture_title(protocol_of or {}, names)
  else:
    label_protocol = False
  fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
  for i, name in enumerate(names):
    xs, losses = zip(*curves[name]) if curves[name] else ((), ())
    label = f'{name} ({(protocol_of or {}).get(name) or "not recorded"})' if label_protocol \
        else name
    ax.plot(xs, losses, marker='.', label=label, **_style(i, name, styles))
  ax.set_xlabel(xlabel or AXES[x][2])
  ax.set_ylabel('val loss (nats/char)')
  if y_top is not None:
    ax.set_ylim(top=y_top)
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
