"""Reads the study's sweep directories and prints its tables (and writes results.json).

  python -m experiments.search.summarize runs/search-full runs/search-halving \
      [runs/search-halving600 ...] [--json experiments/search/results.json]

Per arm: the trials started and run to the end, the sum of trained steps (a trial stopped at
a rung counts the steps to that rung), the sum of steps x parameters (a FLOP proxy: a 2x128
step costs more than a 2x64 one), the wall clock of the sweep's command (SWEEP_DIR.wall,
written by `/usr/bin/time -f %e -o SWEEP_DIR.wall`), and the best val loss with its trial.
Best val loss is seqlab's: the lowest of the trial's evaluations (every eval.every_steps),
each a full pass over the val split with carried state. Reads only files the sweep wrote:
sweep.json, each trial's results.json or stopped.json, and halving.jsonl.
"""

import argparse
import json
import pathlib


def trials_of(sweep_dir: pathlib.Path) -> dict:
  """{trial name: {status, steps, best_val_loss, best_step, val_loss, num_params}}."""
  status = json.loads((sweep_dir / 'sweep.json').read_text())['trials']
  out = {}
  for name, entry in status.items():
    run_dir = sweep_dir / name
    results = run_dir / 'results.json'
    stopped = run_dir / 'stopped.json'
    data = json.loads((results if results.exists() else stopped).read_text())
    out[name] = {'overrides': entry['overrides'], 'status': entry['status'],
                 'steps': data['steps'], 'best_val_loss': data['best_val_loss'],
                 'best_step': data['best_step'], 'val_loss': data['val_loss'],
                 'num_params': data.get('num_params')}
  return out


def arm(sweep_dir: pathlib.Path, params: dict) -> dict:
  trials = trials_of(sweep_dir)
  best = min(trials, key=lambda n: trials[n]['best_val_loss'])
  wall = pathlib.Path(f'{sweep_dir}.wall')
  return {
      'sweep_dir': str(sweep_dir),
      'trials': len(trials),
      'trials_to_the_end': sum(t['status'] == 'done' for t in trials.values()),
      'trained_steps': sum(t['steps'] for t in trials.values()),
      'param_steps': sum(t['steps'] * params[n] for n, t in trials.items())
                     if None not in params.values() else None,
      'wall_clock_s': float(wall.read_text().split()[-1]) if wall.exists() else None,
      'best_trial': best,
      'best_val_loss': trials[best]['best_val_loss'],
      'best_step': trials[best]['best_step'],
      'per_trial': trials,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('full_dir', type=pathlib.Path, help='the sweep run to the end')
  parser.add_argument('halving_dirs', type=pathlib.Path, nargs='+', help='sweeps with --early_stop')
  parser.add_argument('--json', type=pathlib.Path, help='write the numbers here')
  args = parser.parse_args()
  full_trials = trials_of(args.full_dir)
  params = {n: t['num_params'] for n, t in full_trials.items()}  # every full-arm trial finished
  full = arm(args.full_dir, params)
  by_loss = sorted(full_trials, key=lambda n: full_trials[n]['best_val_loss'])
  arms = []
  for halving_dir in args.halving_dirs:
    halving = arm(halving_dir, params)
    log = [json.loads(line) for line in (halving_dir / 'halving.jsonl').read_text().splitlines()
           if line.strip()]
    header = next(e for e in log if e['event'] == 'header')
    ratio = {k: halving[k] / full[k] for k in ('trained_steps', 'param_steps', 'wall_clock_s')
             if halving[k] is not None and full[k] is not None}
    gap = halving['best_val_loss'] - full['best_val_loss']
    arms.append({'rungs': header['rungs'], 'eta': header['eta'], **halving,
                 'ratio_to_full': ratio, 'best_val_loss_gap': gap,
                 'best_rank_in_full': by_loss.index(halving['best_trial']) + 1,
                 'full_best_here': halving['per_trial'][full['best_trial']],
                 'goal_met': {'within_0.01_nats': gap <= 0.01,
                              'at_most_30_percent': all(v <= 0.30 for v in ratio.values())}})

  print('| arm | trials (to the end) | trained steps | steps x params | wall clock | '
        'best val loss | its trial |')
  print('|---|---:|---:|---:|---:|---:|---|')
  for label, a in [('full', full)] + [(f'halving, rungs {h["rungs"]}, eta {h["eta"]}', h)
                                      for h in arms]:
    wall = f'{a["wall_clock_s"]:.0f} s' if a['wall_clock_s'] is not None else '-'
    param_steps = f'{a["param_steps"] / 1e9:.2f}e9' if a['param_steps'] else '-'
    print(f'| {label} | {a["trials"]} ({a["trials_to_the_end"]}) | {a["trained_steps"]:,} | '
          f'{param_steps} | {wall} | {a["best_val_loss"]:.4f} (step {a["best_step"]}) | '
          f'{a["best_trial"]} |')
  for h in arms:
    print(f'\nhalving {h["rungs"]} / full: '
          + ', '.join(f'{k} {v:.3f}' for k, v in h['ratio_to_full'].items()))
    print(f'  best val loss, halving - full: {h["best_val_loss_gap"]:+.4f} nats/char; its best is '
          f'#{h["best_rank_in_full"]} of the full arm; the full arm\'s best here: '
          f'{h["full_best_here"]["status"]}, {h["full_best_here"]["steps"]} steps')
    print(f'  goal: within 0.01 nats {h["goal_met"]["within_0.01_nats"]}, <= 30% of compute '
          f'{h["goal_met"]["at_most_30_percent"]}')

  print('\n| trial | full: best val loss | ' + ' | '.join(
      f'halving {h["rungs"]}: status, steps, val loss there' for h in arms) + ' |')
  print('|---|---:|' + '---|' * len(arms))
  for name in by_loss:
    cells = [f'{h["per_trial"][name]["status"]}, {h["per_trial"][name]["steps"]}, '
             f'{h["per_trial"][name]["val_loss"]:.4f}' for h in arms]
    print(f'| {name} | {full_trials[name]["best_val_loss"]:.4f} | ' + ' | '.join(cells) + ' |')

  if args.json:
    args.json.write_text(json.dumps({'full': full, 'halving': arms}, indent=2) + '\n')


if __name__ == '__main__':
  main()
