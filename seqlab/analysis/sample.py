"""Samples text from a trained run: `python -m seqlab.sample --workdir RUN_DIR`.

  python -m seqlab.sample --workdir runs/shakespeare-cpu --prime "ROMEO:" --temperature 0.8
  python -m seqlab.sample --workdir RUN_DIR --greedy --length 300 --checkpoint latest

Loads the run's config, vocabulary and (by default) its best checkpoint, reads
the prime text, then generates. Same seed and options -> same text. Samples go
to stdout; what was loaded goes to stderr, so `> sample.txt` keeps only text.
"""

import sys

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from seqlab.run import load as runs
from seqlab import generate as sampling
from seqlab.errors import SeqlabError



def define_flags() -> None:
  """The command's flags (defined only when run as a command, so the library imports cleanly)."""
  flags.DEFINE_string('workdir', None, 'Run directory of a training run.')
  flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step number.")
  flags.DEFINE_string('prime', None, 'Text the model reads first (default: a newline, '
                      'or the first symbol of the vocabulary if it has none).')
  flags.DEFINE_integer('length', 2000, 'Symbols to generate per sample.')
  flags.DEFINE_integer('num_samples', 1, 'Samples, generated as one batch.')
  flags.DEFINE_float('temperature', 1.0, 'Softmax temperature (> 0).')
  flags.DEFINE_integer('top_k', 0, 'Sample among the k most likely symbols (0: all).')
  flags.DEFINE_bool('greedy', False, 'Always take the most likely symbol.')
  flags.DEFINE_integer('seed', 0, 'PRNG seed.')
  flags.mark_flags_as_required(['workdir'])


def check_options(length: int, num_samples: int, temperature: float, top_k: int) -> None:
  if length < 1:
    raise SeqlabError(f'--length must be >= 1, got {length}')
  if num_samples < 1:
    raise SeqlabError(f'--num_samples must be >= 1, got {num_samples}')
  if not temperature > 0:  # also catches NaN
    raise SeqlabError(f'--temperature must be > 0, got {temperature}; use --greedy for argmax')
  if top_k < 0:
    raise SeqlabError(f'--top_k must be >= 0 (0 = all symbols), got {top_k}')


def prime_ids(vocab, prime: str | None) -> np.ndarray:
  if prime is None:
    try:
      return vocab.encode('\n')
    except SeqlabError:
      return np.zeros(1, np.int32)
  if not prime:
    raise SeqlabError('--prime is empty; give some text or leave the flag out')
  try:
    return vocab.encode(prime)
  except SeqlabError as e:
    raise SeqlabError(f'--prime: {e}; the model only knows the characters of its training '
                      'text (see vocab.json in the run directory)') from None


def generate(run: runs.LoadedRun, prime: str | None, length: int, num_samples: int,
             temperature: float, top_k: int, greedy: bool, seed: int) -> list[str]:
  """The prime followed by its continuation, for each sample."""
  check_options(length, num_samples, temperature, top_k)
  ids = prime_ids(run.vocab, prime)
  sample = sampling.make_sampler(run.model, length)
  out = sample(run.params, ids, num_samples, jax.random.PRNGKey(seed), temperature, top_k, greedy)
  head = run.vocab.decode(ids) if prime is not None else ''
  return [head + run.vocab.decode(row) for row in np.asarray(out.ids)]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  try:
    check_options(f.length, f.num_samples, f.temperature, f.top_k)
    run = runs.load_run(f.workdir, f.checkpoint)
    print(f'seqlab.sample: {runs.describe(run)}', file=sys.stderr)
    texts = generate(run, f.prime, f.length, f.num_samples, f.temperature, f.top_k, f.greedy,
                     f.seed)
  except SeqlabError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  out = open(sys.stdout.fileno(), 'w', encoding='utf-8', closefd=False)  # UTF-8 whatever the locale
  for i, text in enumerate(texts):
    if len(texts) > 1:
      out.write(f'--- sample {i + 1} ---\n')
    out.write(text + ('\n' if not text.endswith('\n') else ''))
  out.flush()


def run() -> None:
  """The command: `python -m seqlab.sample`."""
  define_flags()
  app.run(main)
