r"""The equal-compute study (issue 17): every zoo model trained for the same training time.

  python -m experiments.zoo.study status                 # the entries, their budgets, how far
  python -m experiments.zoo.study speed                  # seconds per step -> budget.json
  python -m experiments.zoo.study sweep [--only MODEL]   # lr x dropout at 0.8M, 1/3 budget
  python -m experiments.zoo.study pick                   # the sweeps' winners -> hparams.json
  python -m experiments.zoo.study dropout [--only MODEL] # dropout from full-budget runs at 0.8M
  python -m experiments.zoo.study run [--only NAME] [--budget_scale X]
  python -m experiments.zoo.study table                  # table.md and the pictures

The budget is training time: the sum of train-step times (a run's `train_time`, without
compilation, evaluation and checkpoints), turned into a step count per model and size by
one measurement of its speed (`speed`, on a quiet machine), so that every run is a fixed
number of steps and reproducible. Every subcommand can stop and be run again: `run` skips a
finished entry and resumes a stopped one (launch.py resumes a run directory), `sweep` resumes
its sweep, `speed --only KEY` re-measures some entries. experiments/zoo/README.md has the plan.

`--smoke` uses the `,smoke` variants of configs/zoo.py (tiny models, real data) and leaves
the 5M entries at the smoke size: a check of the tooling, not of the models. Write smoke
runs outside the repository (`--runs_dir /tmp/... --budget_file /tmp/.../budget.json`).

Imports no JAX: it starts launch.py processes and reads their run directories. This module is
the command line, `status` and `table`; what it runs is in entries.py (the entries and their
overrides), how it measures budgets in budgets.py, how it trains in training.py (sweep, pick,
dropout, run), how it starts processes in processes.py, how it reports in report.py.
"""

import argparse
import datetime
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `python experiments/zoo/study.py` as well as `-m`
  sys.path.insert(0, str(ROOT))

# pylint: disable=wrong-import-position
from experiments.zoo import budgets
from experiments.zoo import entries as plan
from experiments.zoo import report
from experiments.zoo import training
from seqlab.run import directory as rundir


def status(args) -> int:
  """Prints every entry (its budget's steps, and how far its run is), then the dropout
  ladders' rungs and choices."""
  budget_file = pathlib.Path(args.budget_file)
  budget = plan.load(budget_file)
  hparams = plan.load(pathlib.Path(args.hparams_file))
  runs_dir = training.runs_dir_of(args)
  print(f'budget: {budget_file} ({"measured" if budget else "not measured yet"}); '
        f'runs: {runs_dir}; scale {args.budget_scale:g}')
  selected = plan.select(args.only)
  models = list(dict.fromkeys(e.model for e in selected
                              if e.size == plan.FULL_BUDGET_SIZE and not e.recipe))
  rungs = [plan.dropout_candidate(m, d) for m in models for d in plan.DROPOUT_LADDER]
  rungs = [e for e in rungs if e.key in budget.get('entries', {})
           or plan.run_dir(runs_dir, e).exists()]
  header = ('| entry | config | size and recipe overrides | steps | ms/step | state |\n'
            '|---|---|---|---:|---:|---|')
  print(header)
  remaining = _status_rows(selected, budget, hparams, runs_dir, args)
  if rungs:
    print('\nThe dropout ladders\' rungs (`dropout`; runs in '
          f'{runs_dir / plan.DROPOUT_SUBDIR}):\n{header}')
    remaining += _status_rows(rungs, budget, hparams, runs_dir, args)
  choices = []
  for model in models:
    found = hparams.get(model, {}).get('full_budget')
    if found:
      tried = ', '.join(f'{r["dropout"]:g}' for r in found['runs'])
      choices.append(f'{model} {found["dropout"]:g} (of {tried})')
    else:
      choices.append(f'{model} not chosen yet')
  if choices:
    print(f'\ndropout at {plan.FULL_BUDGET_SIZE} (`dropout`): {"; ".join(choices)}')
  if budget:
    unchosen = sum(1 for m in models if 'full_budget' not in hparams.get(m, {}))
    print(f'training time left: {remaining / 60:.0f} min of train steps (plus compilation, '
          'evaluations and checkpoints)'
          + (f'; plus 1-3 runs of 15 minutes for each of the {unchosen} dropout ladders not '
             'finished (beyond the rung that becomes its seed 0, counted above)'
             if unchosen else ''))
  return 0


def _status_rows(entries, budget: dict, hparams: dict, runs_dir, args) -> float:
  """Prints a row per entry; returns the seconds of train steps they have left."""
  remaining = 0.0
  for entry in entries:
    found = budget.get('entries', {}).get(entry.key)
    steps = budgets.planned_steps(found, args.budget_scale) if found else None
    workdir = plan.run_dir(runs_dir, entry)
    results = plan.load(workdir / rundir.RESULTS_FILENAME)
    step = rundir.latest_step_on_disk(workdir) if workdir.is_dir() else None
    chosen = hparams.get(entry.model, {}).get('full_budget')
    if results and results.get('steps') == steps:
      state = 'done'
    elif (chosen and entry.seed == 0 and entry.size == plan.FULL_BUDGET_SIZE
          and not entry.recipe and entry.dropout is None):
      state = f'copied by `run` from {plan.dropout_candidate(entry.model, chosen["dropout"]).name}'
    elif step:
      state = f'at step {step:,}'
    else:
      state = 'not started'
    if found and (state == 'not started' or state.startswith('at step')):
      remaining += (steps - (step or 0)) * found['seconds_per_step']
    overrides = ' '.join(f'{k}={v}' for k, v in {
        **plan.size_overrides(entry.model, entry.size, args.smoke),
        **plan.RECIPES.get(entry.recipe, {}),
        **({'model.dropout': entry.dropout} if entry.dropout is not None else {})}.items()) or '-'
    ms = f'{found["seconds_per_step"] * 1e3:.1f}' if found else '-'
    print(f'| {entry.name} | {entry.config(args.smoke)} | {overrides} | '
          f'{report.fmt_count(steps)} | {ms} | {state} |')
  return remaining


def _shown(path: pathlib.Path) -> pathlib.Path:
  """`path` relative to the repository where it is inside it (table.md is committed)."""
  path = path.resolve()
  return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def table(args) -> int:
  runs_dir = training.runs_dir_of(args)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  rows = report.table_rows(runs_dir)
  stretch = [e for e in plan.EXTRAS if not plan.is_new_model(e)]
  extras = [r for r in report.table_rows(runs_dir, stretch) if r['n']]
  new_models = [e for e in plan.EXTRAS if plan.is_new_model(e)]
  added = [r for r in report.table_rows(runs_dir, new_models) if r['n']]
  floor = report.noise_floor(rows)
  runs = [run for r in rows + extras + added for run in r['runs']]
  budget = plan.load(pathlib.Path(args.budget_file))
  window = plan.SMOKE_EVAL_WINDOW if budget.get('smoke') else plan.EVAL_WINDOW
  text = [
      '# The equal-compute study: results',
      '',
      f'Written by `python -m experiments.zoo.study table` on '
      f'{datetime.date.today().isoformat()} from {_shown(runs_dir)} '
      f'({sum(r["n"] for r in rows)} finished runs of {len(plan.ENTRIES)}); budget '
      f'{budget.get("budget_seconds", "?")} s of train steps per run'
      + (f', scaled by {args.budget_scale:g}' if args.budget_scale != 1 else '')
      + (' (smoke runs: a check of the tooling, not a result)' if budget.get('smoke') else '')
      + '.',
      '',
      f'Val loss in nats/char on the val split, final step. stream: the split read with the '
      f'state carried (the GPT: sliding windows of {window}, half overlapping); windows: '
      f'non-overlapping windows of {window} characters, each from the zero state. sd: standard '
      f'deviation over seeds. best step: of each seed, by val/loss '
      f'({next((r["protocol"] for r in rows if r["protocol"]), "eval.protocol")}). '
      'chars/s and train min: the runs\' own (train_time: train steps only), which drift '
      'with the machine; the pictures\' minutes are the budget\'s clock instead (step x the '
      'seconds per step measured for the entry), on which every run ends at 15.',
      '',
      report.markdown_table(rows, floor),
      '',
  ]
  if floor:
    text.append(f'Noise floor: {floor["n"]} seeds of {plan.NOISE_MODEL} at {plan.NOISE_SIZE}: sd '
                f'{floor["stream"]:.4f} (stream), '
                + (f'{floor["windows"]:.4f}' if floor['windows'] is not None else '-')
                + f' (windows); under each protocol, a gap under {plan.TIE_SIGMAS:g} sd of '
                'that protocol\'s loss is a tie.')
  else:
    text.append('Noise floor: not measured yet (needs 2 or more finished LSTM 0.8M seeds).')
  if (dropouts := report.dropout_table(plan.load(pathlib.Path(args.hparams_file)))):
    text += ['', '## Dropout at the full budget', '',
             'Each model\'s 0.8M dropout: seed-0 runs of the full budget at its swept learning '
             'rate, from the sweep\'s dropout up (`entries.DROPOUT_LADDER`) while the final '
             'val loss (stream) improves; the chosen run is the table\'s seed 0 (`study.py '
             'dropout`).', '', *dropouts]
  if extras:
    text += ['', '## Attempts at the stretch goal (outside the plan)', '',
             'The same budget rule; each recipe (`entries.RECIPES`) on top of its model\'s '
             'plan entry; "vs best" against the plan\'s runs of the size and these.', '',
             report.markdown_table(extras, floor, against=rows + extras)]
  sweeps = report.new_model_sweep_table(runs_dir, [e.model for e in new_models])
  if added or sweeps:
    dates = ', '.join(dict.fromkeys(plan.NEW_MODELS[e.model][0] for e in new_models))
    text += ['', '## New models (outside the plan)', '',
             plan.NEW_MODELS_LABEL.format(date=dates).capitalize() + ' (`entries.NEW_MODELS`, '
             '`sweep_config.NEW_MODEL_SWEEPS`): the same budget rule, their steps from pairs '
             'timed against a plan key of similar cost; their variant as it is, at dropout 0 '
             '(no full-budget dropout ladder, where the plan\'s recurrent models but Mamba '
             'chose 0.1 or 0.2); "vs best" against the plan\'s runs of the size and these.', '']
    if added:
      text += [report.markdown_table(added, floor, against=rows + added), '']
    if sweeps:
      text += ['Their sweeps (`runs/sweeps/<model>/`), a third of the budget each trial:', '',
               *sweeps]
  if runs:
    text += [''] + report.pictures(runs, out, window)
  (out / 'table.md').write_text('\n'.join(text) + '\n', encoding='utf-8')
  print('\n'.join(text))
  print(f'\nwrote {out / "table.md"}')
  return 0


def parser() -> argparse.ArgumentParser:
  top = argparse.ArgumentParser(prog='python -m experiments.zoo.study',
                                description=__doc__.split('\n\n')[0])
  commands = top.add_subparsers(dest='command', required=True)

  def add(name, fn, help_):
    p = commands.add_parser(name, help=help_)
    p.set_defaults(fn=fn)
    p.add_argument('--only', help='comma-separated entry names (lstm-0.8M-s0), keys '
                   '(lstm-0.8M), models (lstm) or sizes (5M)')
    p.add_argument('--smoke', action='store_true', help='the ,smoke variants (a check of the '
                   'tooling; give --runs_dir and --budget_file outside the repository)')
    p.add_argument('--budget_file', default=str(plan.DEFAULT_BUDGET_FILE))
    p.add_argument('--hparams_file', default=str(plan.DEFAULT_HPARAMS_FILE))
    p.add_argument('--runs_dir', default=None, help=f'default: {plan.DEFAULT_RUNS_DIR} '
                   '(-x<scale> with --budget_scale)')
    p.add_argument('--budget_scale', type=float, default=1.0,
                   help='multiply every step budget (0.01: a quick check)')
    return p

  p = add('speed', budgets.speed, 'measure seconds per step, write budget.json')
  p.add_argument('--budget', type=float, default=plan.BUDGET_SECONDS, help='seconds of train steps')
  p.add_argument('--steps', type=int, default=plan.SPEED_STEPS, help='steps of each measurement')
  p.add_argument('--scratch', default=budgets.DEFAULT_SCRATCH, help='the measurements\' runs')
  p.add_argument('--relative_to', help=(
      'a plan key (hawk-5M): time each entry in pairs with it and scale its budget.json '
      'measurement by their ratio, to re-time one entry on another day on the footing of the '
      'rest (extras are always timed against their plan entry)'))
  p.add_argument('--pairs', type=int, default=3, help='pairs of a relative timing (the median '
                 'ratio counts)')
  p = add('sweep', training.sweep, 'the lr x dropout sweep of each model at 0.8M (a third of '
          'its budget)')
  p.add_argument('--fused', action='store_true', help=(
      'train the trials together (launch.py --fused): the same steps, results equal to float '
      'tolerance. On the 2-core CPU, 6 fused LSTM trials ran at 2.3-2.6k chars/s each, about '
      '15k in all: slower than one trial at a time (20-22k)'))
  p.add_argument('--parallel', type=int, default=1, help=(
      'trials at once, each on its share of the cores (launch.py --parallel). On the 2-core '
      'CPU, 2 LSTM trials on a core each ran at 11k chars/s each, one on 2 devices at 20-22k: '
      'the same work, but one trial\'s compilation and evaluations overlap the other\'s '
      'training'))
  p = add('pick', training.pick, 'each model\'s best sweep trial -> hparams.json')
  p.add_argument('--partial', action='store_true', help='pick from an unfinished sweep, or '
                 'one whose best learning rate is at the edge of those swept')
  p = add('dropout', training.dropout, 'choose each model\'s dropout at 0.8M from full-budget runs '
          '(after `pick`; resumable)')
  p.add_argument('--scratch', default=budgets.DEFAULT_SCRATCH, help='the speed measurements\' runs')
  p.add_argument('--allow_busy', action='store_true', help='measure a rung\'s speed even when '
                 'the machine is not quiet (its steps would be off)')
  p = add('run', training.run, 'train the entries (resumable)')
  p.add_argument('--unswept', action='store_true', help='run models that have no swept '
                 'hyperparameters in hparams.json with their configs/zoo.py variant\'s')
  add('status', status, 'list the entries, their budgets and state')
  p = add('table', table, 'table.md and the pictures from the finished runs')
  p.add_argument('--out', default=str(plan.HERE), help='where table.md and the pictures go')
  return top


def main(argv=None) -> int:
  args = parser().parse_args(argv)
  if args.budget_scale <= 0:
    raise SystemExit('error: --budget_scale must be positive')
  return args.fn(args)


if __name__ == '__main__':
  sys.exit(main())
