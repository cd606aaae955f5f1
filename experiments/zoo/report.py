"""The equal-compute study's results: one row per model and size (mean and spread over seeds),
the noise floor and the ties it implies, the markdown table, and the pictures (drawn by
seqlab.analysis.compare and curves). Reads run directories only."""

import pathlib
import statistics

from experiments.zoo.entries import ENTRIES
from experiments.zoo.entries import load
from experiments.zoo.entries import MODELS
from experiments.zoo.entries import NEW_MODELS
from experiments.zoo.entries import NOISE_MODEL
from experiments.zoo.entries import NOISE_SIZE
from experiments.zoo.entries import SIZES
from experiments.zoo.entries import TIE_SIGMAS
from seqlab.analysis import compare
from seqlab.analysis import curves as run_curves
from seqlab.run import directory as rundir

WINDOWS_TAG = 'val/loss_windows'  # the windows protocol's val loss, logged by every run
PICTURE_SPAN = 0.5  # nats/char the val-loss pictures show above their best final loss


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _loss(mean, sd, n) -> str:
  if mean is None:
    return '-'
  return f'{mean:.4f} ± {sd:.4f}' if sd is not None else f'{mean:.4f} ({n} seed)'


def fmt_count(value, digits=0) -> str:
  return '-' if value is None else f'{value:,.{digits}f}'


def table_rows(runs_dir: pathlib.Path, entries=ENTRIES) -> list[dict]:
  """One row per (model, size): the finished seeds' numbers, with their mean and spread."""
  rows = []
  for key in dict.fromkeys(e.key for e in entries):
    group = [e for e in entries if e.key == key]
    done = [(e, load(runs_dir / e.name / rundir.RESULTS_FILENAME)) for e in group]
    done = [(e, r) for e, r in done if r]
    results = [r for _, r in done]
    pick_ = lambda field: [r.get(field) for r in results]
    stream, stream_sd = _mean_sd(pick_('val_loss_stream'))
    windows, windows_sd = _mean_sd(pick_('val_loss_windows'))
    rows.append({
        'model': group[0].model + (f' ({group[0].recipe})' if group[0].recipe else ''),
        'size': group[0].size, 'key': key,
        'seeds': f'{len(done)}/{len(group)}',
        'runs': [runs_dir / e.name for e, _ in done],
        'params': results[0].get('num_params') if results else None,
        'flops_per_char': results[0].get('flops_per_char') if results else None,
        'chars_per_sec': _mean_sd(pick_('chars_per_sec'))[0],
        'steps': results[0].get('steps') if results else None,
        'train_minutes': (_mean_sd(pick_('train_time'))[0] or 0) / 60 if results else None,
        'val_stream': stream, 'val_stream_sd': stream_sd,
        'val_windows': windows, 'val_windows_sd': windows_sd,
        'n': len(done), 'protocol': results[0].get('eval_protocol') if results else None,
        'best_steps': [r.get('best_step') for r in results],
    })
  return rows


def noise_floor(rows: list[dict]) -> dict:
  """The noise floor's standard deviations (stream, windows), from the LSTM's seeds."""
  row = next((r for r in rows if (r['model'], r['size']) == (NOISE_MODEL, NOISE_SIZE)), None)
  if row is None or row['n'] < 2:
    return {}
  return {'stream': row['val_stream_sd'], 'windows': row['val_windows_sd'], 'n': row['n']}


def _verdict(value, best, sd) -> str:
  """Gap to the best of the size; a tie when under TIE_SIGMAS noise-floor sds."""
  if value is None or best is None:
    return '-'
  if value == best:
    return 'best'
  gap = value - best
  return f'+{gap:.4f}' + (': tie' if sd is not None and gap < TIE_SIGMAS * sd else '')


def markdown_table(rows: list[dict], floor: dict, against: list[dict] | None = None) -> str:
  """The study's table; each protocol has its own 'vs best' column (the GPT's stream is
  sliding windows, not carried state: only the windows column measures every model alike),
  the best of the size among `against` (default: `rows`)."""
  lines = ['| model | size | params | FLOPs/char | chars/s | steps | train min | '
           'val loss, stream (mean ± sd) | val loss, windows (mean ± sd) | best step | seeds | '
           'vs best, stream | vs best, windows |',
           '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|']
  for size in SIZES:
    sized = [r for r in rows if r['size'] == size]
    rivals = [r for r in (against or rows) if r['size'] == size]
    best = {p: min((r[f'val_{p}'] for r in rivals if r[f'val_{p}'] is not None), default=None)
            for p in ('stream', 'windows')}
    for r in sized:
      verdicts = [_verdict(r[f'val_{p}'], best[p], floor.get(p)) for p in ('stream', 'windows')]
      lines.append(
          f'| {r["model"]} | {r["size"]} | {fmt_count(r["params"])} '
          f'| {fmt_count(r["flops_per_char"])} '
          f'| {fmt_count(r["chars_per_sec"])} | {fmt_count(r["steps"])} | '
          f'{fmt_count(r["train_minutes"], 1)} | '
          f'{_loss(r["val_stream"], r["val_stream_sd"], r["n"])} | '
          f'{_loss(r["val_windows"], r["val_windows_sd"], r["n"])} | '
          f'{", ".join(fmt_count(s) for s in r["best_steps"]) or "-"} | {r["seeds"]} | '
          f'{verdicts[0]} | {verdicts[1]} |')
  return '\n'.join(lines)


def line_styles(runs: list[pathlib.Path]) -> dict:
  """A colour per model and a line style per size (dotted: an extra's recipe), by run name
  (the entries' names)."""
  styles = {}
  for run in runs:
    parts = run.name.split('-')  # model-size[-recipe]-sSEED
    model, size = parts[:2]
    palette = MODELS + tuple(NEW_MODELS)  # a colour of its own for a new model too
    color = f'C{palette.index(model)}' if model in palette else None
    styles[run.name] = {'color': color,
                        'linestyle': ':' if len(parts) > 3 else '-' if size == '0.8M' else '--'}
  return styles


BUDGET_CLOCK_LABEL = ('training time by the budget (minutes: step x the seconds per step '
                      'measured for its entry)')


def budget_clock_curves(runs: list[pathlib.Path], tag: str = run_curves.VAL_TAG
                        ) -> tuple[dict[str, list[tuple[float, float]]], list[str]]:
  """Each run's `tag` curve against the study's clock: its step times the seconds per step
  that `speed` measured for its entry (the `<entry>.json` that `run` keeps beside the run),
  in minutes, so that every full-budget run ends at 15. A run's own `train_time` drifts with
  the machine (the same 8,099 LSTM steps took 761 s and 889 s on two days); the budget does
  not. ({name: [(minutes, loss)]}, the runs without that record.)"""
  by_step, _ = run_curves.axis_curves(runs, 'step', tag)
  curves, missing = {}, []
  for run, name in zip(runs, run_curves.run_names(runs)):
    if name not in by_step:
      continue
    seconds = load(run.with_name(f'{run.name}.json')).get('seconds_per_step')
    if seconds is None:
      missing.append(name)
    else:
      curves[name] = [(step * seconds / 60, loss) for step, loss in by_step[name]]
  return curves, missing


def picture_top(curves: dict) -> tuple[float | None, list[str]]:
  """The val-loss pictures' y top, PICTURE_SPAN above the best final loss, and the runs that
  end above it (a stalled run would otherwise squash every other curve into a line); None
  where no curve has a point."""
  finals = {name: points[-1][1] for name, points in curves.items() if points}
  if not finals:
    return None, []
  top = min(finals.values()) + PICTURE_SPAN
  return top, [name for name, final in finals.items() if final > top]


def pictures(runs: list[pathlib.Path], out: pathlib.Path, window: int) -> list[str]:
  """compare.csv and the pictures (val loss under each protocol against training minutes,
  by the budget's clock, and training FLOPs; loss by position), drawn by
  seqlab.analysis.compare; returns table.md's lines."""
  out.mkdir(parents=True, exist_ok=True)
  names = run_curves.run_names(runs)
  columns, rows = compare.table_rows(runs)
  compare.write_csv(out / compare.CSV_FILENAME, columns, rows)
  styles, protocol_of = line_styles(runs), run_curves.protocols(runs)
  lines = []
  for x, what in (('time', 'training minutes'), ('flops', 'training FLOPs')):
    for tag, suffix in ((run_curves.VAL_TAG, ''), (WINDOWS_TAG, '_windows')):
      if x == 'time':
        curves, missing = budget_clock_curves(runs, tag)
        lacks, label = 'no seconds per step recorded by `run`', BUDGET_CLOCK_LABEL
      else:
        curves, missing = run_curves.axis_curves(runs, x, tag)
        lacks, label = f'no {run_curves.AXES[x][0]}', None
      png = run_curves.AXES[x][3].replace('.png', f'{suffix}.png')
      if curves:
        title = (None if tag == run_curves.VAL_TAG else
                 f'{WINDOWS_TAG}: windows of {window}, each from the zero state (every model)')
        top, above = picture_top(curves)
        run_curves.plot_curves(out / png, curves, names, x, protocol_of, styles, title, label,
                               y_top=top)
        lines += [f'![val loss ({"windows" if suffix else "stream"}) against {what}]({png})', '']
        if above:
          lines += [f'Above the top of that picture (its best final loss + {PICTURE_SPAN:g}, '
                    f'{top:.2f}) at the end: {", ".join(above)}.', '']
      if missing and not suffix:
        lines += [f'Not in the picture against {what} ({lacks}): {", ".join(missing)}.', '']
  by_position = run_curves.by_position_curves(runs)
  if by_position:
    run_curves.plot_by_position(out / run_curves.BY_POSITION_FILENAME, by_position, names, styles)
    lines += [f'![val loss by position in a window]({run_curves.BY_POSITION_FILENAME})', '']
  return lines + [f'Every run\'s numbers: [{compare.CSV_FILENAME}]({compare.CSV_FILENAME}).']


def dropout_table(hparams: dict) -> list[str]:
  """The full-budget dropout choice (study.py `dropout`) of each model that has one: a row per
  dropout tried, seed 0 at 0.8M, and the sweep's dropout it started from."""
  lines = ['| model | sweep\'s dropout | dropout | steps | train s | val, stream | val, windows | '
           'best val (step) | chosen |', '|---|---:|---:|---:|---:|---:|---:|---:|---|']
  chosen_any = False
  for model in MODELS:
    found = hparams.get(model, {}).get('full_budget')
    if not found:
      continue
    chosen_any = True
    swept = hparams[model].get('overrides', {}).get('model.dropout')
    for run in found['runs']:
      best = (f'{run["best_val_loss"]:.4f} ({fmt_count(run["best_step"])})'
              if run.get('best_val_loss') is not None else '-')
      windows = run.get('val_loss_windows')
      lines.append(
          f'| {model} | {"-" if swept is None else f"{swept:g}"} | {run["dropout"]:g} | '
          f'{fmt_count(run.get("steps"))} | {fmt_count(run.get("train_time"))} | '
          f'{run.get("val_loss_stream") or run["val_loss"]:.4f} | '
          f'{"-" if windows is None else f"{windows:.4f}"} | {best} | '
          f'{"yes" if run["dropout"] == found["dropout"] else ""} |')
  return lines if chosen_any else []


def new_model_sweep_table(runs_dir: pathlib.Path, models: list[str]) -> list[str]:
  """The sweeps of the models added after the plan (entries.NEW_MODELS): a row per finished
  trial (learning rate, dropout, steps, final val loss under both protocols), the lowest
  stream loss of each model marked; [] where none has a finished trial."""
  lines = ['| model | lr | dropout | steps | val, stream | val, windows | best |',
           '|---|---:|---:|---:|---:|---:|---|']
  found = []
  for model in models:
    trials = []
    for trial in sorted((runs_dir / 'sweeps' / model).glob('*/' + rundir.RESULTS_FILENAME)):
      results, config = load(trial), load(trial.with_name(rundir.CONFIG_FILENAME))
      if results.get('val_loss_stream') is None or not config:
        continue
      trials.append((config['optim']['learning_rate'], config['model'].get('dropout', 0.0),
                     results))
    if not trials:
      continue
    best = min(r['val_loss_stream'] for _, _, r in trials)
    for lr, dropout, r in sorted(trials, key=lambda t: (t[0], t[1])):
      windows = r.get('val_loss_windows')
      found.append(f'| {model} | {lr:g} | {dropout:g} | {fmt_count(r.get("steps"))} | '
                   f'{r["val_loss_stream"]:.4f} | '
                   f'{"-" if windows is None else f"{windows:.4f}"} | '
                   f'{"yes" if r["val_loss_stream"] == best else ""} |')
  return lines + found if found else []
