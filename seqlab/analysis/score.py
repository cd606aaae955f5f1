"""Scores a trained run under both evaluation protocols: `python -m seqlab.score --workdir RUN`.

  python -m seqlab.score --workdir runs/shakespeare-cpu                 # val split, best checkpoint
  python -m seqlab.score --workdir RUN --split test --window 256 --json scores.json

`stream` (the state carried from the split's first symbol; the GPT: sliding windows) and
`windows` (nanoGPT's: windows of --window symbols, each from the zero state), as defined in
`seqlab.evaluate`. This is how a run trained before the protocols existed gets both numbers,
and how one run is scored at several window lengths. Prints a table (the loss by position in
the window summarised in eighths); --json writes everything, the per-position curve included.
"""

import json
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from seqlab import evaluate as evaluate_lib
from seqlab import steps
from seqlab.errors import SeqlabError
from seqlab.models import registry
from seqlab.run import load as runs


def define_flags() -> None:
  """The command's flags (defined only when run as a command, so the library imports cleanly)."""
  flags.DEFINE_string('workdir', None, 'Run directory of a training run.')
  flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step number.")
  flags.DEFINE_enum('split', 'val', ['val', 'test'], 'The split to score.')
  flags.DEFINE_integer('window', None, "The windows protocol's window (default: the run's "
                       'eval.window, 256 for a run made before it; a GPT: at most its context).')
  flags.DEFINE_integer('num_streams', None, 'Rows per evaluation step (default: the run\'s '
                       'eval.num_streams).')
  flags.DEFINE_string('json', None, 'Also write the scores to this JSON file.')
  flags.mark_flags_as_required(['workdir'])


def score(run: runs.LoadedRun, split: str = 'val', window: int | None = None,
          num_streams: int | None = None) -> dict:
  """Both protocols' results (`seqlab.evaluate.evaluate`) on `split` of the run's corpus."""
  eval_config = run.config.eval.copy_and_resolve_references()
  with eval_config.unlocked():
    eval_config.protocol, eval_config.both_protocols = 'stream', True
    if window is not None:
      eval_config.window = window
    elif 'window' not in eval_config:  # a run made before eval.window
      eval_config.window = min(256, registry.window(run.model.config) or 256)
    if num_streams is not None:
      eval_config.num_streams = num_streams
  if eval_config.num_streams < 1:
    raise SeqlabError(f'--num_streams must be >= 1, got {eval_config.num_streams}')
  evaluate_lib.check_config(eval_config, run.model.config)
  tokens = getattr(runs.load_corpus(run), split)
  if len(tokens) < 2:
    raise SeqlabError(f'the {split} split of this run has {len(tokens)} symbols; nothing to score')
  result = evaluate_lib.evaluate(jax.jit(steps.make_eval_step(run.model)), run.params,
                                 run.model.config, tokens, eval_config)
  return {'workdir': str(run.workdir), 'checkpoint': run.which, 'step': run.step, 'split': split,
          'window': eval_config.window, 'chars': result['chars'],
          'stream': result['stream'], 'windows': result['windows']}


def _mean(losses: np.ndarray) -> str:
  losses = losses[np.isfinite(losses)]  # positions past the end of a short split are NaN
  return f'{losses.mean():.3f}' if losses.size else '-'


def table(scores: dict) -> str:
  """Markdown: the two protocols, and the windows protocol's loss by eighths of the window."""
  stream, windows = scores['stream'], scores['windows']
  lines = [f"{scores['workdir']}, {scores['checkpoint']} checkpoint (step {scores['step']}), "
           f"{scores['split']} split, {scores['chars']:,} predictions", '',
           '| protocol | loss (nats/char) | bits/char |', '|---|---:|---:|',
           f"| stream | {stream['loss']:.4f} | {stream['bpc']:.4f} |",
           f"| windows of {scores['window']} | {windows['loss']:.4f}"
           + (f" +- {windows['stderr']:.4f}" if windows['stderr'] is not None else '')
           + f" | {windows['bpc']:.4f} |", '']
  by_position = np.asarray([np.nan if x is None else x for x in windows['by_position']], float)
  eighths = np.array_split(np.arange(len(by_position)), min(8, len(by_position)))
  lines += ['windows protocol, mean loss by position in the window:', '',
            '| positions | ' + ' | '.join(f'{p[0]}-{p[-1]}' for p in eighths) + ' |',
            '|---|' + '---:|' * len(eighths),
            '| loss | ' + ' | '.join(_mean(by_position[p]) for p in eighths)
            + ' |']
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  try:
    if f.window is not None and f.window < 1:
      raise SeqlabError(f'--window must be >= 1, got {f.window}')
    run = runs.load_run(f.workdir, f.checkpoint)
    print(f'seqlab.score: {runs.describe(run)}', file=sys.stderr)
    scores = score(run, f.split, f.window, f.num_streams)
    if f.json:
      with open(f.json, 'w', encoding='utf-8') as out:
        json.dump(scores, out, indent=2)
  except SeqlabError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except OSError as e:
    print(f'error: cannot write {f.json}: {e.strerror}', file=sys.stderr)
    sys.exit(74)
  print(table(scores))


def run() -> None:
  """The command: `python -m seqlab.score`."""
  define_flags()
  app.run(main)
