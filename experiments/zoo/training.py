"""What trains: `sweep` (lr x dropout at 0.8M, a third of the budget), `pick` (the sweeps'
winners -> hparams.json), `dropout` (each 0.8M model's dropout from full-budget runs) and `run`
(the entries, resumable, each recorded with its exact command)."""

import dataclasses
import datetime
import math
import os
import pathlib
import shutil

from experiments.zoo import budgets
from experiments.zoo import entries as plan
from experiments.zoo import processes
from seqlab.analysis import compare
from seqlab.run import directory as rundir

ROOT = plan.ROOT


def default_runs_dir(scale: float) -> pathlib.Path:
  """experiments/zoo/runs, or runs/zoo-study-x<scale> for a scaled budget (never mixed)."""
  return plan.DEFAULT_RUNS_DIR if scale == 1 else plan.SCALED_RUNS_DIR.with_name(
      f'{plan.SCALED_RUNS_DIR.name}-x{scale:g}')


def runs_dir_of(args) -> pathlib.Path:
  return pathlib.Path(args.runs_dir) if args.runs_dir else default_runs_dir(args.budget_scale)


def sweep(args) -> int:
  """launch.py --sweep of experiments/zoo/sweep_config.py for each model at 0.8M, each trial a
  third of that model's budget."""
  budget_file = pathlib.Path(args.budget_file)
  budget = plan.load(budget_file)
  budgets.check_smoke(budget, args.smoke, budget_file)
  runs_dir = runs_dir_of(args)
  keys = {e.model: plan.sweep_key(e) for e in plan.select(args.only) if plan.swept(e)}

  def sweep_one(model: str) -> int:
    found = budgets.budget_entry(budget, keys[model], budget_file)
    if found is None:
      return 1
    steps = budgets.planned_steps(found, args.budget_scale, plan.SWEEP_FRACTION)
    every = max(1, steps // plan.EVALS_PER_RUN)
    config = f'experiments/zoo/sweep_config.py:{model}' + (',smoke' if args.smoke else '')
    # --parallel N on a CPU: N trials at once on disjoint cores (seqlab.sweeps' slots), each
    # with one JAX device per core it has.
    devices = {'parallel.cpu_devices': max(1, (os.cpu_count() or 1) // args.parallel)} \
        if args.parallel > 1 else {}
    command = plan.launch_command(config, runs_dir / 'sweeps' / model, {
        'train.num_steps': steps, 'eval.every_steps': every, 'log.checkpoint_every_steps': every,
        **plan.window_overrides(model, args.smoke),
        **plan.warmup_overrides(model, steps, args.smoke), **devices}, sweep=True,
        fused=args.fused, parallel=args.parallel)
    print(f'== sweep of {model} at 0.8M: {steps} steps per trial', flush=True)
    return processes.run_logged(command, runs_dir / 'sweeps' / f'{model}.log')

  return processes.each(((m, m) for m in keys), sweep_one)


def pick(args) -> int:
  """hparams.json: each model's trial of lowest final val loss (its eval.protocol's)."""
  runs_dir = runs_dir_of(args)
  hparams_file = pathlib.Path(args.hparams_file)
  hparams = plan.load(hparams_file)
  lines = []
  for model in dict.fromkeys(e.model for e in plan.select(args.only)
                             if not e.recipe or plan.is_new_model(e)):
    sweep_dir = runs_dir / 'sweeps' / model
    if not sweep_dir.is_dir():
      print(f'note: no sweep of {model} in {sweep_dir}; skipped')
      continue
    _, rows = compare.table_rows(sweep_dir)
    done = [r for r in rows if r['status'] == 'done' and r['val_loss'] is not None
            and math.isfinite(r['val_loss'])]
    planned = max(len(rows), len(plan.load(sweep_dir / 'sweep.json').get('trials', {})))
    if len(done) < planned and not args.partial:
      print(f'note: {model}: {planned - len(done)} of {planned} trials not done: not picked '
            '(finish its sweep, or give --partial)')
      continue
    if not done:
      continue
    best = min(done, key=lambda r: r['val_loss'])
    config = plan.load(sweep_dir / best['trial'] / rundir.CONFIG_FILENAME)
    rates = [plan.load(sweep_dir / r['trial'] / rundir.CONFIG_FILENAME)['optim']['learning_rate']
             for r in done]
    if len(set(rates)) > 2 and config['optim']['learning_rate'] in (min(rates), max(rates)) \
        and not args.partial:
      print(f'note: {model}: the best learning rate, {config["optim"]["learning_rate"]:g}, is '
            'at the edge of the swept ones: not picked; widen it by a factor of 2 that way '
            '(sweep_config.WIDENED) and sweep again')
      continue
    overrides = {'optim.learning_rate': config['optim']['learning_rate'],
                 'model.dropout': config['model']['dropout']}
    kept = {}
    if (chosen := hparams.get(model, {}).get('full_budget')):
      if hparams[model].get('overrides') == overrides:
        kept = {'full_budget': chosen}
      else:
        print(f'note: {model}: the pick changed, so its full-budget dropout choice (made at '
              'the old one) is dropped: run `dropout` again')
    hparams[model] = {
        'overrides': overrides,
        'trial': best['trial'], 'val_loss': best['val_loss'],
        'protocol': (plan.load(sweep_dir / best['trial'] / rundir.RESULTS_FILENAME)
                     .get('eval_protocol')),
        'sweep_steps': config['train']['num_steps'], 'trials_done': len(done),
        'ranking': [(r['trial'], r['val_loss']) for r in sorted(done, key=lambda r: r['val_loss'])],
        **kept,
    }
    lines.append(f'{model}: {best["trial"]} (val loss {best["val_loss"]:.4f})')
  plan.write_json(hparams_file, hparams)
  print('\n'.join(lines + [f'wrote {hparams_file}']))
  return 0


def dropout(args) -> int:
  """Chooses each selected model's dropout at 0.8M from seed-0 runs of the full budget at its
  swept learning rate (entries.DROPOUT_LADDER, climbing from the sweep's dropout while the final
  val loss improves), into hparams.json's `full_budget`; the winner's speed becomes the model's
  0.8M budget, and its run the model's seed-0 entry (`run` copies it). Resumable: finished
  rungs are skipped, a stopped one resumes."""
  budget_file, hparams_file = pathlib.Path(args.budget_file), pathlib.Path(args.hparams_file)
  if args.smoke or args.budget_scale != 1:
    for given, default in ((hparams_file, plan.DEFAULT_HPARAMS_FILE),
                           (budget_file, plan.DEFAULT_BUDGET_FILE)):
      if given.resolve() == default.resolve():
        raise SystemExit(f'error: a smoke or scaled dropout choice would write the study\'s '
                         f'{default.name}: give --{default.stem}_file elsewhere')
  budget = plan.load(budget_file)
  budgets.check_smoke(budget, args.smoke, budget_file)
  hparams = plan.load(hparams_file)
  models = list(dict.fromkeys(e.model for e in plan.select(args.only)
                              if e.size == plan.FULL_BUDGET_SIZE and not e.recipe))
  if not models:
    print(f'note: nothing to do: dropout is chosen for the plan\'s {plan.FULL_BUDGET_SIZE} '
          'models (--only MODEL)')

  def climb(model: str) -> int:
    if model not in hparams:
      print(f'note: {model} has no swept hyperparameters in {hparams_file}: run `sweep` and '
            '`pick` first; skipped', flush=True)
      return 1
    return _climb(model, budget, hparams, args)

  return processes.each(((m, m) for m in models), climb, 'not chosen')


def _climb(model: str, budget: dict, hparams: dict, args) -> int:
  """One model's dropout ladder (see `dropout`): 0, or the status that stopped it."""
  budget_file, hparams_file = pathlib.Path(args.budget_file), pathlib.Path(args.hparams_file)
  key = f'{model}-{plan.FULL_BUDGET_SIZE}'
  variant = plan.variant_value(model, 'model', 'dropout', args.smoke)
  swept = hparams[model]['overrides'].get('model.dropout', variant)
  # The plan key's own measurement (from the study's `speed` sitting) is its dropout's rung,
  # kept under the rung's key, and the reference that the other rungs are timed against.
  own = budget.get('entries', {}).get(key)
  reference = None
  if own and not own.get('copied_from'):
    reference = plan.dropout_candidate(
        model, own.get('overrides', {}).get('model.dropout', variant))
    budget.update(plan.update_json(budget_file, lambda b: b['entries'].setdefault(
        reference.key, {**own, 'copied_from': key})))
  else:  # chosen before: the plan key is the winner's copy; the reference is kept as a rung
    reference = next((c for c in (plan.dropout_candidate(model, d) for d in plan.DROPOUT_LADDER)
                      if budget.get('entries', {}).get(c.key, {}).get('copied_from') == key),
                     None)
  tried = {}
  for rate in sorted({swept} | {d for d in plan.DROPOUT_LADDER if d > swept}):
    candidate = plan.dropout_candidate(model, rate)
    found = budget.get('entries', {}).get(candidate.key)
    relative = reference is not None and candidate != reference
    if (found is None or budgets.budget_is_stale(candidate, found, hparams, args.smoke)
        or (relative and found.get('relative_to') != reference.key
            and found.get('same_cost_as') is None)):
      sibling = relative and _same_cost_rung(model, rate, reference, budget, hparams, args)
      if sibling:
        budgets.share_speed(candidate, sibling, budget, args)
      elif relative:
        status = budgets.measure_relative_speed(candidate, reference, budget, hparams, args,
                                                refuse_busy=not args.allow_busy)
      else:
        status = budgets.measure_speed(candidate, budget, hparams, args,
                                       refuse_busy=not args.allow_busy)
      if status:
        return status
    reference = reference or candidate  # no plan-key measurement: the first rung is the one
    status = run_entry(candidate, budget, hparams, args)
    if status:
      return status
    tried[rate] = plan.load(plan.run_dir(runs_dir_of(args), candidate) /
                            rundir.RESULTS_FILENAME)
    losses = {d: r['val_loss'] for d, r in tried.items()}
    print(f'{model}: dropout {rate:g} -> val loss {losses[rate]:.4f} '
          f'({tried[rate].get("eval_protocol")})', flush=True)
    if len(tried) > 1 and losses[rate] >= min(losses[d] for d in tried if d != rate):
      break  # no better than a lower dropout: the rule takes it that more would not be either
  best = min(tried, key=lambda d: tried[d]['val_loss'])
  choice = {
      'dropout': best, 'size': plan.FULL_BUDGET_SIZE, 'seed': 0,
      'protocol': tried[best].get('eval_protocol'),
      'runs': [{'dropout': d, 'run': plan.dropout_candidate(model, d).name,
                'steps': r.get('steps'), 'val_loss': r['val_loss'],
                'val_loss_stream': r.get('val_loss_stream'),
                'val_loss_windows': r.get('val_loss_windows'),
                'best_val_loss': r.get('best_val_loss'), 'best_step': r.get('best_step'),
                'train_time': r.get('train_time')} for d, r in tried.items()]}
  hparams[model]['full_budget'] = choice
  plan.update_json(hparams_file, lambda h: h.setdefault(model, hparams[model]).update(
      full_budget=choice))
  winner = plan.dropout_candidate(model, best).key
  budget.update(plan.update_json(budget_file, lambda b: b['entries'].update(
      {key: {**b['entries'][winner], 'copied_from': winner}})))
  print(f'{model}: dropout {best:g} at the full budget (tried '
        f'{", ".join(f"{d:g}" for d in tried)}); wrote {hparams_file} and {key} in '
        f'{budget_file}', flush=True)
  return 0


def _same_cost_rung(model: str, rate: float, reference, budget: dict, hparams: dict,
                    args) -> str | None:
  """The key of the model's rung above 0 whose speed a rung of `rate` (> 0) shares
  (`budgets.share_speed`): the reference where its dropout is above 0, else the lowest rung
  above 0 already timed against it; None for dropout 0 or where none is timed yet."""
  if rate <= 0:
    return None
  found = budget.get('entries', {})
  for rung in (plan.dropout_candidate(model, d) for d in plan.DROPOUT_LADDER):
    record = found.get(rung.key)
    if (rung.dropout > 0 and rung.dropout != rate and record
        and not budgets.budget_is_stale(rung, record, hparams, args.smoke)
        and (rung == reference or (record.get('relative_to') == reference.key
                                   and record.get('same_cost_as') is None))):
      return rung.key
  return None


def run(args) -> int:
  """Runs each selected entry for its budget's steps; finished ones are skipped."""
  budget_file = pathlib.Path(args.budget_file)
  budget = plan.load(budget_file)
  budgets.check_smoke(budget, args.smoke, budget_file)
  hparams = plan.load(pathlib.Path(args.hparams_file))
  selected = plan.select(args.only)
  missing = sorted({e.model for e in selected} - set(hparams))
  if missing and not (args.unswept or args.smoke):
    raise SystemExit(f'error: no swept hyperparameters for {", ".join(missing)} in '
                     f'{args.hparams_file}: run `sweep` and `pick` first (or give --unswept to '
                     'train with configs/zoo.py\'s, which is not the study)')
  unchosen = sorted({e.model for e in selected if e.size == plan.FULL_BUDGET_SIZE
                      and e.dropout is None and not plan.is_new_model(e) and e.model in hparams
                      and 'full_budget' not in hparams[e.model]})
  if unchosen and not (args.unswept or args.smoke):
    raise SystemExit(f'error: no full-budget dropout for {", ".join(unchosen)} in '
                     f'{args.hparams_file}: run `dropout --only {",".join(unchosen)}` first '
                     '(its 0.8M runs train at that dropout; --unswept trains at the sweep\'s, '
                     'which is not the study)')
  return processes.each(((e.name, e) for e in selected),
                        lambda entry: run_entry(entry, budget, hparams, args))


def run_entry(entry, budget: dict, hparams: dict, args) -> int:
  """Trains one entry for its budget's steps in plan.run_dir (resuming it where it stopped;
  a finished one is skipped): 0 when it is done, launch.py's status where it stopped or
  failed, 1 where it cannot start (the reason printed)."""
  found = budgets.budget_entry(budget, entry.key, args.budget_file)
  if found is None:
    return 1
  if (why := budgets.budget_is_stale(entry, found, hparams, args.smoke)):
    print(f'error: {entry.name}: {why}; re-measure it: `python -m experiments.zoo.study speed '
          f'--only {entry.key}`', flush=True)
    return 1
  steps = budgets.planned_steps(found, args.budget_scale)
  workdir = plan.run_dir(runs_dir_of(args), entry)
  command = plan.launch_command(entry.config(args.smoke), workdir,
                                plan.run_overrides(entry, steps, hparams, args.smoke))
  record_file = workdir.with_name(f'{entry.name}.json')
  log = workdir.with_name(f'{entry.name}.log')
  record = plan.load(record_file)
  results = plan.load(workdir / rundir.RESULTS_FILENAME)
  if record and record['command'][1:] != command[1:]:
    print(f'error: {entry.name} was {"run" if results else "started"} in {workdir} with '
          'another command (the budget, hyperparameters or scale changed since):\n  '
          f'{" ".join(record["command"][1:])}\nnow:\n  {" ".join(command[1:])}\n'
          + ('' if results else 'finish it with that command, or ')
          + f'move {workdir} and {record_file} away to run it anew', flush=True)
    return 1
  if results and results.get('steps') == steps:
    print(f'{entry.name}: done ({steps:,} steps), skipped', flush=True)
    return 0
  if results:
    print(f'error: {entry.name} in {workdir} ran {results.get("steps")} steps, the plan is '
          f'now {steps:,}: move {workdir} away to run it anew', flush=True)
    return 1
  new_record = {
      'command': command, 'entry': dataclasses.asdict(entry), 'steps': steps,
      'budget_seconds': budget.get('budget_seconds'), 'budget_scale': args.budget_scale,
      'seconds_per_step': found['seconds_per_step'], 'speed_measured_at': found.get(
          'measured_at'), 'hparams': hparams.get(entry.model),
      'started_at': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
  if (not record or record.get('copied_from')) and not workdir.exists():
    source, why = _winning_candidate(entry, command, hparams, runs_dir_of(args))
    if why:
      print(f'error: {entry.name}: {why}', flush=True)
      return 1
    if source:
      staging = workdir.with_name(f'.{entry.name}.copying')
      shutil.rmtree(staging, ignore_errors=True)
      shutil.copytree(source, staging, ignore=shutil.ignore_patterns('checkpoints', '*.log',
                                                                     '.lock'))
      plan.write_json(record_file, {**new_record, 'copied_from': str(
          source.relative_to(ROOT) if source.is_relative_to(ROOT) else source)})
      staging.rename(workdir)  # last: a stop before it copies again, never trains
      print(f'{entry.name}: the full-budget dropout choice\'s winning run, {source.name}, '
            'copied (the same command but its directory)', flush=True)
      return 0
  if not record:
    plan.write_json(record_file, new_record)
  step = rundir.latest_step_on_disk(workdir) if workdir.is_dir() else None
  if workdir.is_dir() and not step:
    # Started elsewhere (its checkpoints are not kept): its events and samples would mix
    # with a new run's, so it starts anew in a clean directory.
    print(f'note: {entry.name} has no checkpoint in {workdir}: starting it anew', flush=True)
    shutil.rmtree(workdir)
  print(f'== {entry.name}: {steps:,} steps'
        + (f', resuming at step {step:,}' if step else ''), flush=True)
  status = processes.run_logged(command, log)
  if status in processes.INTERRUPTED:
    print(f'{entry.name} stopped (exit status {status}); run the same command to resume')
  elif status:
    print(f'error: {entry.name} failed with exit status {status}; see {log}', flush=True)
  return status


def _winning_candidate(entry, command: list[str], hparams: dict, runs_dir: pathlib.Path
                       ) -> tuple[pathlib.Path | None, str | None]:
  """The finished dropout-choice run that is this plan entry's run (seed 0 at 0.8M, the chosen
  dropout, the same command but for its workdir), and why not where it should be one but is
  not (the entry must not train a run other than the one its dropout was chosen on)."""
  chosen = hparams.get(entry.model, {}).get('full_budget', {}).get('dropout')
  candidate = plan.dropout_candidate(entry.model, chosen) if chosen is not None else None
  if (candidate is None or entry.recipe or entry.dropout is not None
      or entry.size != plan.FULL_BUDGET_SIZE or entry.seed != candidate.seed):
    return None, None
  source = plan.run_dir(runs_dir, candidate)
  record = plan.load(source.with_name(f'{candidate.name}.json'))
  if not record or not plan.load(source / rundir.RESULTS_FILENAME):
    return None, (f'its dropout was chosen on {candidate.name}, which is not finished in '
                  f'{source.parent}: run `dropout --only {entry.model}`')
  theirs, ours = record['command'][1:], command[1:]
  i = ours.index('--workdir') + 1
  if theirs[:i] + theirs[i + 1:] != ours[:i] + ours[i + 1:]:
    return None, (f'its dropout was chosen on {candidate.name}, whose command differs from '
                  f'this one but for its directory:\n  {" ".join(theirs)}\nnow:\n  '
                  f'{" ".join(ours)}\n(a speed measured since?) run `dropout --only '
                  f'{entry.model}` again')
  return source, None
