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

Imports no JAX: it starts launch.py processes and reads their run directories. What it runs
is in entries.py (the entries and their overrides), how it reports in report.py.
"""

import argparse
import dataclasses
import datetime
import math
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `python experiments/zoo/study.py` as well as `-m`
  sys.path.insert(0, str(ROOT))

# pylint: disable=wrong-import-position
from experiments.zoo import report
from experiments.zoo import entries as plan
from seqlab.analysis import compare
from seqlab.run import directory as rundir

INTERRUPTED = (129, 130, 143)  # launch.py's exit statuses after SIGHUP, SIGINT, SIGTERM
DEFAULT_SCRATCH = '/tmp/zoo-study-speed'  # speed measurements' runs

def run_logged(command: list[str], log: pathlib.Path) -> int:
  """Runs `command` in the repository root, its output to the console and appended to `log`;
  returns its exit status. A Ctrl-C reaches it too (its process group), and a SIGTERM to
  this process is passed on: it checkpoints and exits 130 / 143."""
  log.parent.mkdir(parents=True, exist_ok=True)
  with open(log, 'a', encoding='utf-8') as f:
    f.write(f'\n$ {" ".join(command)}\n')
    f.flush()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1)
    previous = signal.signal(signal.SIGTERM, lambda *_: process.send_signal(signal.SIGTERM))
    try:
      for line in process.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        f.write(line)
      return process.wait()
    except KeyboardInterrupt:
      return process.wait()
    finally:
      signal.signal(signal.SIGTERM, previous)


def busy_cores(seconds: float = 2.0) -> float | None:
  """How many cores' worth of CPU time the machine spent over `seconds` (from /proc/stat;
  None where there is none). Unlike the load average, it does not remember the previous
  measurement's own run."""
  def sample():
    with open('/proc/stat', encoding='ascii') as f:
      fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields), fields[3] + fields[4]  # total, idle + iowait (in clock ticks)
  try:
    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
  except (OSError, ValueError, IndexError):
    return None
  if total1 == total0:
    return None
  return (1 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


def _quiet_note(busy: float | None) -> str | None:
  if busy is not None and busy > 0.25:
    return (f'note: {busy:.2f} cores busy before this measurement: the machine is not quiet, '
            'and this speed is not the model\'s (measure again when it is)')
  return None


# --- speed ---------------------------------------------------------------------------------


def speed(args) -> int:
  """Measures each entry key's train-step time with a short launch.py run of its config and
  writes budget.json: seconds per step and the step count for the budget."""
  budget_file = pathlib.Path(args.budget_file)
  budget = plan.load(budget_file)
  if budget and budget.get('smoke', False) != args.smoke:
    raise SystemExit(f'error: {budget_file} holds {"smoke" if budget.get("smoke") else "real"} '
                     'measurements; use another --budget_file')
  hparams = plan.load(pathlib.Path(args.hparams_file))
  keys = list(dict.fromkeys(e.key for e in plan.select(args.only)))
  failed = []
  budget.update(budget_seconds=args.budget, smoke=args.smoke, speed_steps=args.steps)
  for key in keys:
    status = measure_speed(next(e for e in plan.EVERY_ENTRY if e.key == key), budget, hparams,
                           args)
    if status in INTERRUPTED:
      return status
    if status:
      failed.append(key)
  print(f'wrote {budget_file}')
  return 1 if failed else 0


def measure_speed(entry, budget: dict, hparams: dict, args) -> int:
  """Times `entry.key` with a run of budget['speed_steps'] steps and records it in `budget`
  (written to args.budget_file at once: a stopped `speed` keeps what it measured); returns
  launch.py's exit status, or 1 where it gave no speed."""
  seconds, steps = budget['budget_seconds'], budget['speed_steps']
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
  busy_before = busy_cores()
  print(f'== speed of {key}: {steps} steps', flush=True)
  if (note := _quiet_note(busy_before)):
    print(note, flush=True)
  status = run_logged(command, scratch / f'{key}.log')
  if status in INTERRUPTED:
    return status
  results = plan.load(workdir / rundir.RESULTS_FILENAME)
  config = plan.load(workdir / rundir.CONFIG_FILENAME)
  if status or not results.get('chars_per_sec'):
    print(f'error: the speed run of {key} failed (exit status {status}); see '
          f'{scratch / f"{key}.log"}', flush=True)
    return status or 1
  chars_per_step = config['data']['batch_size'] * config['data']['seq_len']
  seconds_per_step = chars_per_step / results['chars_per_sec']
  budget.setdefault('entries', {})[key] = {
      'seconds_per_step': seconds_per_step,
      'steps': max(1, int(seconds // seconds_per_step)),
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
  plan.write_json(pathlib.Path(args.budget_file), budget)
  print(f'{key}: {seconds_per_step * 1e3:.1f} ms/step ({results["chars_per_sec"]:,.0f} '
        f'chars/s) -> {budget["entries"][key]["steps"]:,} steps in {seconds:g} s', flush=True)
  return 0


def _budget_entry(budget: dict, key: str, budget_file) -> dict | None:
  found = budget.get('entries', {}).get(key)
  if found is None:
    print(f'note: {key} has no speed in {budget_file}: run `study.py speed --only {key}` '
          'first; skipped', flush=True)
  return found


def _check_smoke(budget: dict, smoke: bool, budget_file) -> None:
  if not budget:
    raise SystemExit(f'error: no {budget_file}: run `python -m experiments.zoo.study speed` '
                     'first')
  if budget.get('smoke', False) != smoke:
    kind = 'smoke' if budget.get('smoke') else 'real'
    raise SystemExit(f'error: {budget_file} holds {kind} measurements: give --smoke with a '
                     'smoke budget file and only with one')


def default_runs_dir(scale: float) -> pathlib.Path:
  """experiments/zoo/runs, or runs/zoo-study-x<scale> for a scaled budget (never mixed)."""
  return plan.DEFAULT_RUNS_DIR if scale == 1 else plan.SCALED_RUNS_DIR.with_name(
      f'{plan.SCALED_RUNS_DIR.name}-x{scale:g}')


def _runs_dir(args) -> pathlib.Path:
  return pathlib.Path(args.runs_dir) if args.runs_dir else default_runs_dir(args.budget_scale)


def planned_steps(budget_entry: dict, scale: float, fraction: float = 1.0) -> int:
  return max(1, round(budget_entry['steps'] * scale * fraction))


# --- sweep and pick ------------------------------------------------------------------------


def sweep(args) -> int:
  """launch.py --sweep of experiments/zoo/sweep_config.py for each model at 0.8M, each trial a
  third of that model's budget."""
  budget_file = pathlib.Path(args.budget_file)
  budget = plan.load(budget_file)
  _check_smoke(budget, args.smoke, budget_file)
  runs_dir = _runs_dir(args)
  models = list(dict.fromkeys(e.model for e in plan.select(args.only)
                              if e.size == '0.8M' and not e.recipe))
  failed = []
  for model in models:
    found = _budget_entry(budget, f'{model}-0.8M', budget_file)
    if found is None:
      failed.append(model)
      continue
    steps = planned_steps(found, args.budget_scale, plan.SWEEP_FRACTION)
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
    status = run_logged(command, runs_dir / 'sweeps' / f'{model}.log')
    if status in INTERRUPTED:
      return status
    if status:
      failed.append(model)
  if failed:
    print(f'not finished: {", ".join(failed)}')
  return 1 if failed else 0


def pick(args) -> int:
  """hparams.json: each model's trial of lowest final val loss (its eval.protocol's)."""
  runs_dir = _runs_dir(args)
  hparams_file = pathlib.Path(args.hparams_file)
  hparams = plan.load(hparams_file)
  lines = []
  for model in dict.fromkeys(e.model for e in plan.select(args.only) if not e.recipe):
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
    hparams[model] = {
        'overrides': {'optim.learning_rate': config['optim']['learning_rate'],
                      'model.dropout': config['model']['dropout']},
        'trial': best['trial'], 'val_loss': best['val_loss'],
        'protocol': (plan.load(sweep_dir / best['trial'] / rundir.RESULTS_FILENAME)
                     .get('eval_protocol')),
        'sweep_steps': config['train']['num_steps'], 'trials_done': len(done),
        'ranking': [(r['trial'], r['val_loss']) for r in sorted(done, key=lambda r: r['val_loss'])],
    }
    lines.append(f'{model}: {best["trial"]} (val loss {best["val_loss"]:.4f})')
  plan.write_json(hparams_file, hparams)
  print('\n'.join(lines + [f'wrote {hparams_file}']))
  return 0


# --- run -----------------------------------------------------------------------------------


def run(args) -> int:
  """Runs each selected entry for its budget's steps; finished ones are skipped."""
  budget_file = pathlib.Path(args.budget_file)
  budget = plan.load(budget_file)
  _check_smoke(budget, args.smoke, budget_file)
  hparams = plan.load(pathlib.Path(args.hparams_file))
  selected = plan.select(args.only)
  missing = sorted({e.model for e in selected} - set(hparams))
  if missing and not (args.unswept or args.smoke):
    raise SystemExit(f'error: no swept hyperparameters for {", ".join(missing)} in '
                     f'{args.hparams_file}: run `sweep` and `pick` first (or give --unswept to '
                     'train with configs/zoo.py\'s, which is not the study)')
  failed = []
  for entry in selected:
    status = run_entry(entry, budget, hparams, args)
    if status in INTERRUPTED:
      return status
    if status:
      failed.append(entry.name)
  if failed:
    print(f'not finished: {", ".join(failed)}')
  return 1 if failed else 0


def run_entry(entry, budget: dict, hparams: dict, args) -> int:
  """Trains one entry for its budget's steps in plan.run_dir (resuming it where it stopped;
  a finished one is skipped): 0 when it is done, launch.py's status where it stopped or
  failed, 1 where it cannot start (the reason printed)."""
  found = _budget_entry(budget, entry.key, args.budget_file)
  if found is None:
    return 1
  if (why := _budget_is_stale(entry, found, hparams, args.smoke)):
    print(f'error: {entry.name}: {why}; re-measure it: `python -m experiments.zoo.study speed '
          f'--only {entry.key}`', flush=True)
    return 1
  steps = planned_steps(found, args.budget_scale)
  workdir = plan.run_dir(_runs_dir(args), entry)
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
  if not record and not workdir.exists() and (source := _winning_candidate(
      entry, command, hparams, _runs_dir(args))):
    shutil.copytree(source, workdir, ignore=shutil.ignore_patterns('checkpoints', '*.log',
                                                                   '.lock'))
    plan.write_json(record_file, {**new_record, 'copied_from': str(
        source.relative_to(ROOT) if source.is_relative_to(ROOT) else source)})
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
  status = run_logged(command, log)
  if status in INTERRUPTED:
    print(f'{entry.name} stopped (exit status {status}); run the same command to resume')
  elif status:
    print(f'error: {entry.name} failed with exit status {status}; see {log}', flush=True)
  return status


def _winning_candidate(entry, command: list[str], hparams: dict,
                       runs_dir: pathlib.Path) -> pathlib.Path | None:
  """The finished dropout-choice run that is this plan entry's run (seed 0 at 0.8M, the chosen
  dropout, the same command but for its workdir), or None."""
  chosen = hparams.get(entry.model, {}).get('full_budget', {}).get('dropout')
  if (chosen is None or entry.recipe or entry.dropout is not None
      or entry.size != plan.FULL_BUDGET_SIZE):
    return None
  candidate = plan.dropout_candidate(entry.model, chosen)
  if candidate.seed != entry.seed:
    return None
  source = plan.run_dir(runs_dir, candidate)
  record = plan.load(source.with_name(f'{candidate.name}.json'))
  if not record or not plan.load(source / rundir.RESULTS_FILENAME):
    return None
  theirs, ours = record['command'][1:], command[1:]
  i = ours.index('--workdir') + 1
  return source if theirs[:i] + theirs[i + 1:] == ours[:i] + ours[i + 1:] else None


def dropout(args) -> int:
  """Chooses each selected model's dropout at 0.8M from seed-0 runs of the full budget at its
  swept learning rate (entries.DROPOUT_LADDER, climbing from the sweep's dropout while the final
  val loss improves), into hparams.json's `full_budget`; the winner's speed becomes the model's
  0.8M budget, and its run the model's seed-0 entry (`run` copies it)."""
  budget_file, hparams_file = pathlib.Path(args.budget_file), pathlib.Path(args.hparams_file)
  budget = plan.load(budget_file)
  _check_smoke(budget, args.smoke, budget_file)
  if (args.smoke or args.budget_scale != 1) and hparams_file == plan.DEFAULT_HPARAMS_FILE:
    raise SystemExit('error: a smoke or scaled dropout choice would write the study\'s '
                     f'{hparams_file}: give --hparams_file elsewhere')
  hparams = plan.load(hparams_file)
  models = list(dict.fromkeys(e.model for e in plan.select(args.only) if not e.recipe))
  failed = []
  for model in models:
    if model not in hparams:
      print(f'note: {model} has no swept hyperparameters in {hparams_file}: run `sweep` and '
            '`pick` first; skipped', flush=True)
      failed.append(model)
      continue
    swept = hparams[model]['overrides'].get(
        'model.dropout', plan.variant_value(model, 'model', 'dropout', args.smoke))
    tried = {}
    for rate in [d for d in plan.DROPOUT_LADDER if d >= swept]:
      candidate = plan.dropout_candidate(model, rate)
      found = budget.get('entries', {}).get(candidate.key)
      if found is None or _budget_is_stale(candidate, found, hparams, args.smoke):
        status = measure_speed(candidate, budget, hparams, args)
        if status:
          return status if status in INTERRUPTED else 1
      status = run_entry(candidate, budget, hparams, args)
      if status:
        return status if status in INTERRUPTED else 1
      results = plan.load(plan.run_dir(_runs_dir(args), candidate) / rundir.RESULTS_FILENAME)
      tried[rate] = results
      losses = {d: r['val_loss'] for d, r in tried.items()}
      print(f'{model}: dropout {rate:g} -> val loss {results["val_loss"]:.4f} '
            f'({results.get("eval_protocol")})', flush=True)
      if len(tried) > 1 and losses[rate] >= min(losses[d] for d in tried if d != rate):
        break  # no better than a lower dropout: higher ones would overfit less and fit worse
    best = min(tried, key=lambda d: tried[d]['val_loss'])
    hparams[model]['full_budget'] = {
        'dropout': best, 'size': plan.FULL_BUDGET_SIZE, 'seed': 0,
        'protocol': tried[best].get('eval_protocol'),
        'runs': [{'dropout': d, 'run': plan.dropout_candidate(model, d).name,
                  'steps': r.get('steps'), 'val_loss': r['val_loss'],
                  'val_loss_stream': r.get('val_loss_stream'),
                  'val_loss_windows': r.get('val_loss_windows'),
                  'best_val_loss': r.get('best_val_loss'), 'best_step': r.get('best_step'),
                  'train_time': r.get('train_time')} for d, r in tried.items()]}
    plan.write_json(hparams_file, hparams)
    key = f'{model}-{plan.FULL_BUDGET_SIZE}'
    winner = plan.dropout_candidate(model, best).key
    budget['entries'][key] = {**budget['entries'][winner], 'copied_from': winner}
    plan.write_json(budget_file, budget)
    print(f'{model}: dropout {best:g} at the full budget (tried '
          f'{", ".join(f"{d:g}" for d in tried)}); wrote {hparams_file} and {key} in '
          f'{budget_file}', flush=True)
  return 1 if failed else 0


def _budget_is_stale(entry, found: dict, hparams: dict, smoke: bool) -> str | None:
  """Why the speed measurement no longer times the entry's run (its dropout, whose random
  masks cost time, differs from the swept one), or None."""
  variant = plan.variant_value(entry.model, 'model', 'dropout', smoke)
  measured = found.get('overrides', {}).get('model.dropout', variant)
  picked = plan.hparam_overrides(entry, hparams).get('model.dropout', variant)
  if measured != picked:
    return f'its speed was measured with dropout {measured:g}, its run has {picked:g}'
  return None


def status(args) -> int:
  """Prints every entry: its budget's steps, and how far its run is."""
  budget_file = pathlib.Path(args.budget_file)
  budget = plan.load(budget_file)
  runs_dir = _runs_dir(args)
  print(f'budget: {budget_file} ({"measured" if budget else "not measured yet"}); '
        f'runs: {runs_dir}; scale {args.budget_scale:g}')
  print('| entry | config | size and recipe overrides | steps | ms/step | state |\n'
        '|---|---|---|---:|---:|---|')
  remaining = 0.0
  for entry in plan.select(args.only):
    found = budget.get('entries', {}).get(entry.key)
    steps = planned_steps(found, args.budget_scale) if found else None
    workdir = plan.run_dir(runs_dir, entry)
    results = plan.load(workdir / rundir.RESULTS_FILENAME)
    step = rundir.latest_step_on_disk(workdir) if workdir.is_dir() else None
    if results and results.get('steps') == steps:
      state = 'done'
    elif step:
      state = f'at step {step:,}'
    else:
      state = 'not started'
    if found and state != 'done':
      remaining += (steps - (step or 0)) * found['seconds_per_step']
    overrides = ' '.join(f'{k}={v}' for k, v in {
        **plan.size_overrides(entry.model, entry.size, args.smoke),
        **plan.RECIPES.get(entry.recipe, {})}.items()) or '-'
    ms = f'{found["seconds_per_step"] * 1e3:.1f}' if found else '-'
    print(f'| {entry.name} | {entry.config(args.smoke)} | {overrides} | '
          f'{report.fmt_count(steps)} | {ms} | {state} |')
  if budget:
    print(f'training time left: {remaining / 60:.0f} min of train steps (plus compilation, '
          'evaluations and checkpoints)')
  hparams = plan.load(pathlib.Path(args.hparams_file))
  choices = []
  for model in dict.fromkeys(e.model for e in plan.select(args.only) if not e.recipe):
    found = hparams.get(model, {}).get('full_budget')
    if found:
      tried = ', '.join(f'{r["dropout"]:g}' for r in found['runs'])
      choices.append(f'{model} {found["dropout"]:g} (of {tried})')
    else:
      choices.append(f'{model} not chosen yet')
  print(f'dropout at {plan.FULL_BUDGET_SIZE} (`dropout`): {"; ".join(choices)}')
  return 0


# --- table ---------------------------------------------------------------------------------



def table(args) -> int:
  runs_dir = _runs_dir(args)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  rows = report.table_rows(runs_dir)
  extras = [r for r in report.table_rows(runs_dir, plan.EXTRAS) if r['n']]
  floor = report.noise_floor(rows)
  runs = [run for r in rows + extras for run in r['runs']]
  budget = plan.load(pathlib.Path(args.budget_file))
  window = plan.SMOKE_EVAL_WINDOW if budget.get('smoke') else plan.EVAL_WINDOW
  text = [
      '# The equal-compute study: results',
      '',
      f'Written by `python -m experiments.zoo.study table` on '
      f'{datetime.date.today().isoformat()} from {runs_dir} '
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
      'chars/s and train min: the runs\' own (train_time: train steps only).',
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
  if runs:
    text += [''] + report.pictures(runs, out, window)
  (out / 'table.md').write_text('\n'.join(text) + '\n', encoding='utf-8')
  print('\n'.join(text))
  print(f'\nwrote {out / "table.md"}')
  return 0


# --- the command ---------------------------------------------------------------------------


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

  p = add('speed', speed, 'measure seconds per step, write budget.json')
  p.add_argument('--budget', type=float, default=plan.BUDGET_SECONDS, help='seconds of train steps')
  p.add_argument('--steps', type=int, default=plan.SPEED_STEPS, help='steps of each measurement')
  p.add_argument('--scratch', default=DEFAULT_SCRATCH, help='the measurements\' runs')
  p = add('sweep', sweep, 'the lr x dropout sweep of each model at 0.8M (a third of its budget)')
  p.add_argument('--fused', action='store_true', help=(
      'train the trials together (launch.py --fused): the same steps, results equal to float '
      'tolerance. On the 2-core CPU, 6 fused LSTM trials ran at 2.3-2.6k chars/s each, about '
      '15k in all: slower than one trial at a time (20-22k)'))
  p.add_argument('--parallel', type=int, default=1, help=(
      'trials at once, each on its share of the cores (launch.py --parallel). On the 2-core '
      'CPU, 2 LSTM trials on a core each ran at 11k chars/s each, one on 2 devices at 20-22k: '
      'the same work, but one trial\'s compilation and evaluations overlap the other\'s '
      'training'))
  p = add('pick', pick, 'each model\'s best sweep trial -> hparams.json')
  p.add_argument('--partial', action='store_true', help='pick from an unfinished sweep, or '
                 'one whose best learning rate is at the edge of those swept')
  p = add('dropout', dropout, 'choose each model\'s dropout at 0.8M from full-budget runs '
          '(after `pick`; resumable)')
  p.add_argument('--scratch', default=DEFAULT_SCRATCH, help='the speed measurements\' runs')
  p = add('run', run, 'train the entries (resumable)')
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
