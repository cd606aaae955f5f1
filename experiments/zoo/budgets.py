"""The budget rule's measurements: `speed` times each entry key's train steps and writes
budget.json (seconds per step, and the steps that fill the budget); the checks that a run's
budget is there, of its kind (smoke or real) and still times its run (its dropout)."""

import datetime
import os
import pathlib
import shutil
import statistics

from experiments.zoo import entries as plan
from experiments.zoo import processes
from seqlab.run import directory as rundir

DEFAULT_SCRATCH = '/tmp/zoo-study-speed'  # speed measurements' runs


def speed(args) -> int:
  """Measures each entry key's train-step time with a short launch.py run of its config and
  writes budget.json: seconds per step and the step count for the budget."""
  budget_file = pathlib.Path(args.budget_file)
  budget = plan.load(budget_file)
  if budget and budget.get('smoke', False) != args.smoke:
    raise SystemExit(f'error: {budget_file} holds {"smoke" if budget.get("smoke") else "real"} '
                     'measurements; use another --budget_file')
  hparams = plan.load(pathlib.Path(args.hparams_file))
  reference = None
  if args.relative_to:
    reference = next((e for e in plan.ENTRIES if e.key == args.relative_to), None)
    if reference is None:
      raise SystemExit(f'error: --relative_to {args.relative_to}: not a key of the plan; keys: '
                       + ', '.join(dict.fromkeys(e.key for e in plan.ENTRIES)))
  if args.pairs < 1:
    raise SystemExit(f'error: --pairs must be at least 1, got {args.pairs}')
  selected = {}  # each key's first entry
  for entry in plan.select(args.only):
    selected.setdefault(entry.key, entry)
  budget = plan.update_json(budget_file, lambda b: b.update(
      budget_seconds=args.budget, smoke=args.smoke, speed_steps=args.steps))

  def measure(entry) -> int:
    copied = budget.get('entries', {}).get(entry.key, {}).get('copied_from')
    if copied:
      print(f'note: {entry.key}: its speed is {copied}\'s, set by `dropout`; re-measure that '
            f'(`speed --only {copied}`) and run `dropout` again; skipped', flush=True)
      return 0
    if entry.recipe or reference:
      return measure_against(entry, reference or plan_reference(entry), budget, hparams, args)
    return measure_speed(entry, budget, hparams, args)

  status = processes.each(selected.items(), measure)
  print(f'wrote {budget_file}')
  return status


def plan_reference(entry):
  """The plan entry an extra is timed against: its own model's (a recipe's), or for a new
  model the plan key of similar cost that entries.NEW_MODELS names."""
  if plan.is_new_model(entry):
    key = plan.NEW_MODELS[entry.model][1]
    return next(e for e in plan.ENTRIES if e.key == key)
  return plan.Entry(entry.model, entry.size, entry.seed)


def measure_speed(entry, budget: dict, hparams: dict, args, refuse_busy: bool = False) -> int:
  """Times `entry.key` with a run of budget['speed_steps'] steps and records it in `budget`
  and in args.budget_file at once (a stopped `speed` keeps what it measured); returns
  launch.py's exit status, or 1 where it gave no speed or, with `refuse_busy`, where the
  machine was not quiet before it."""
  status, record = _timed(entry, budget['speed_steps'], hparams, args, refuse_busy)
  if status:
    return status
  _record(entry.key, {**record, 'steps': max(1, int(budget['budget_seconds'] //
                                                    record['seconds_per_step']))}, budget, args)
  return 0


def measure_against(entry, reference, budget: dict, hparams: dict, args) -> int:
  """Times `entry` in args.pairs pairs with `reference` (an extra: its plan entry; otherwise
  `--relative_to`), whose budget.json measurement it scales. The machine drifts between days:
  hawk-5M took 0.593 s a step on 12-01 and 0.435 on 12-02, so an entry timed alone on another
  day gets that day's speed, not the plan's. A recipe may be cheaper than its reference (other
  batches), so no floor on the ratio."""
  if reference.key not in budget.get('entries', {}):
    print(f'error: {entry.key} is timed against {reference.key}, which {args.budget_file} does '
          f'not have: run `python -m experiments.zoo.study speed --only {reference.key}` first',
          flush=True)
    return 1
  return measure_relative_speed(entry, reference, budget, hparams, args, pairs=args.pairs,
                                at_least=None)


def measure_relative_speed(entry, reference, budget: dict, hparams: dict, args,
                           refuse_busy: bool = False, pairs: int = 3,
                           at_least: float | None = 1.0) -> int:
  """Times `entry` against `reference` (whose seconds per step budget.json has, from the
  study's `speed` sitting) in `pairs` back-to-back pairs, and records `entry.key` at the
  reference's seconds per step times the median of the pairs' ratios.

  This machine's speed drifts by 10-30% over tens of minutes (a dropout rung measured 11.6k
  chars/s, the next rung 17 minutes later 14.0k), so a rung timed alone is off by as much; the
  two runs of a pair mostly agree, and a ratio taken in one sitting keeps a rung's budget on the
  same footing as its reference's. A single run can still be 30% slow (the LSTM's reference,
  first in a sitting: 0.134 s a step, then 0.104), which moves a ratio of sums of two pairs from
  1.12 to 0.95: hence the median of three pairs, in alternating order. A median under 1 (a
  rung faster than its reference: Mamba's rung 0.1, 0.953 from pairs 0.87, 1.01, 0.95) is
  noise, since dropout adds operations and removes none: the ratio is then `at_least`
  (`measured_ratio` keeps the median; None: no floor)."""
  base = budget['entries'][reference.key]
  times = {entry.key: [], reference.key: []}
  for i in range(pairs):
    for timed in ((reference, entry) if i % 2 == 0 else (entry, reference)):
      status, record = _timed(timed, budget['speed_steps'], hparams, args, refuse_busy)
      if status:
        return status
      times[timed.key].append(record['seconds_per_step'])
      if timed is entry:
        last = record
  measured = statistics.median(e / r for r, e in zip(times[reference.key], times[entry.key]))
  ratio = measured if at_least is None else max(at_least, measured)
  seconds_per_step = base['seconds_per_step'] * ratio
  _record(entry.key, {
      **last, 'seconds_per_step': seconds_per_step,
      'steps': max(1, int(budget['budget_seconds'] // seconds_per_step)),
      'chars_per_sec': last['chars_per_step'] / seconds_per_step,
      'relative_to': reference.key, 'ratio': ratio, 'measured_ratio': measured,
      'ratio_of': f'median of {pairs} pairs'
                  + ('' if at_least is None else f', at least {at_least:g}'),
      'pairs': [{'reference': r, 'entry': e}
                for r, e in zip(times[reference.key], times[entry.key])]}, budget, args)
  return 0


def share_speed(entry, source_key: str, budget: dict, args) -> None:
  """Records `entry.key` with `source_key`'s measurement, unmeasured (`same_cost_as`): a
  dropout rung shares the first timed rung above 0 of its model, because every rate above 0
  runs the same operations (a mask drawn and applied: seqlab.models.layers.Dropout) and only
  dropout 0 skips them. Timing each rung anew let the machine's noise give two such rungs
  budgets 10% apart (minGRU: 1.109 x and 1.009 x the same reference, pairs 0.99-1.23)."""
  source = budget['entries'][source_key]
  _record(entry.key, {**{k: v for k, v in source.items() if k != 'copied_from'},
                      'same_cost_as': source_key}, budget, args)


def _record(key: str, record: dict, budget: dict, args) -> None:
  budget.update(plan.update_json(pathlib.Path(args.budget_file),
                                 lambda b: b.setdefault('entries', {}).update({key: record})))
  if 'same_cost_as' in record:
    how = f'(the same cost as {record["same_cost_as"]}) '
  elif 'ratio' in record:
    how = f'({record["ratio"]:.3f} x {record["relative_to"]}\'s) '
  else:
    how = f'({record["chars_per_sec"]:,.0f} chars/s) '
  print(f'{key}: {record["seconds_per_step"] * 1e3:.1f} ms/step {how}'
        + f'-> {record["steps"]:,} steps in {budget["budget_seconds"]:g} s', flush=True)


def _timed(entry, steps: int, hparams: dict, args, refuse_busy: bool) -> tuple[int, dict]:
  """One speed run of `steps` steps of the entry's command: (launch.py's status, or 1 where
  it gave no speed or the machine was busy with `refuse_busy`; the measurement)."""
  scratch = pathlib.Path(args.scratch)
  key = entry.key
  workdir = scratch / key
  if workdir.exists():
    shutil.rmtree(workdir)  # a fresh measurement: never a resumed one
  overrides = {**plan.run_overrides(entry, steps, hparams, args.smoke),
               'eval.every_steps': steps, 'log.checkpoint_every_steps': steps,
               'log.sample_every_steps': 10 ** 9, 'log.novelty_num_samples': 0}
  command = plan.launch_command(entry.config(args.smoke), workdir, overrides)
  load_before = os.getloadavg()
  busy_before = processes.busy_cores()
  print(f'== speed of {key}: {steps} steps', flush=True)
  if (note := processes.quiet_note(busy_before)):
    if refuse_busy:
      print(f'error: {key}: {busy_before:.2f} cores busy before its speed measurement, which '
            'would set a run\'s steps at once: stop what runs beside it and start again (or '
            'give --allow_busy)', flush=True)
      return 1, {}
    print(note, flush=True)
  status = processes.run_logged(command, scratch / f'{key}.log')
  if status in processes.INTERRUPTED:
    return status, {}
  results = plan.load(workdir / rundir.RESULTS_FILENAME)
  config = plan.load(workdir / rundir.CONFIG_FILENAME)
  if status or not results.get('chars_per_sec'):
    print(f'error: the speed run of {key} failed (exit status {status}); see '
          f'{scratch / f"{key}.log"}', flush=True)
    return status or 1, {}
  chars_per_step = config['data']['batch_size'] * config['data']['seq_len']
  return 0, {
      'seconds_per_step': chars_per_step / results['chars_per_sec'],
      'chars_per_sec': results['chars_per_sec'], 'chars_per_step': chars_per_step,
      'num_params': results.get('num_params'), 'flops_per_char': results.get('flops_per_char'),
      'measured_steps': steps, 'config': entry.config(args.smoke),
      'overrides': {k: v for k, v in overrides.items() if k != 'train.num_steps'},
      'measured_at': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'load_average_before': [round(x, 2) for x in load_before],
      'busy_cores_before': None if busy_before is None else round(busy_before, 2),
      'load_average_after': [round(x, 2) for x in os.getloadavg()],
      'cpu_count': os.cpu_count(),
  }


def budget_entry(budget: dict, key: str, budget_file) -> dict | None:
  found = budget.get('entries', {}).get(key)
  if found is None:
    print(f'note: {key} has no speed in {budget_file}: run `study.py speed --only {key}` '
          'first; skipped', flush=True)
  return found


def check_smoke(budget: dict, smoke: bool, budget_file) -> None:
  if not budget:
    raise SystemExit(f'error: no {budget_file}: run `python -m experiments.zoo.study speed` '
                     'first')
  if budget.get('smoke', False) != smoke:
    kind = 'smoke' if budget.get('smoke') else 'real'
    raise SystemExit(f'error: {budget_file} holds {kind} measurements: give --smoke with a '
                     'smoke budget file and only with one')


def planned_steps(budget_entry: dict, scale: float, fraction: float = 1.0) -> int:
  return max(1, round(budget_entry['steps'] * scale * fraction))


def budget_is_stale(entry, found: dict, hparams: dict, smoke: bool) -> str | None:
  """Why the speed measurement no longer times the entry's run (one of its dropout and the
  swept one is 0 and the other not: random masks cost time at any rate above 0, the same), or
  None."""
  variant = plan.variant_value(entry.model, 'model', 'dropout', smoke)
  measured = found.get('overrides', {}).get('model.dropout', variant)
  picked = plan.hparam_overrides(entry, hparams).get('model.dropout', variant)
  if (measured > 0) != (picked > 0):
    return f'its speed was measured with dropout {measured:g}, its run has {picked:g}'
  return None

