"""Samples a trained run at several temperatures and measures entropy and novelty.

  python -m experiments.temperature.temperature --workdir runs/shakespeare-cpu \
      --out experiments/temperature

For each temperature: `--num_samples` samples of `--length` characters (one
batch, fixed seed) from the run's best checkpoint; the mean per-character
entropy (bits) of the distributions they were drawn from; and the fraction of
their 10/20/30-grams found verbatim in the train split. Writes `results.md`
(table + the start of one sample per temperature) and `results.json`.
"""

import json
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from seqlab.analysis import novelty
from seqlab.run import load as runs
from seqlab import generate as sampling
from seqlab.errors import SeqlabError

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory of a trained model.')
_OUT = flags.DEFINE_string('out', 'experiments/temperature', 'Where results.md/json go.')
_TEMPERATURES = flags.DEFINE_list('temperatures', ['0.2', '0.5', '0.8', '1.0', '1.5'], '')
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', 16, 'Samples per temperature.')
_LENGTH = flags.DEFINE_integer('length', 2000, 'Characters per sample.')
_SHOWN = flags.DEFINE_integer('shown', 600, 'Characters of one sample shown per temperature.')
_SEED = flags.DEFINE_integer('seed', 0, '')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every read at INFO
  try:
    run = runs.load_run(_WORKDIR.value)
    corpus = runs.load_corpus(run)
  except SeqlabError as e:
    sys.exit(f'error: {e}')
  training = novelty.TrainingNgrams(corpus.train)
  sample = sampling.make_sampler(run.model, _LENGTH.value)
  prime = run.vocab.encode('\n')
  rows, shown = [], {}
  for t in map(float, _TEMPERATURES.value):
    out = sample(run.params, prime, _NUM_SAMPLES.value, jax.random.PRNGKey(_SEED.value), t)
    ids, entropy = np.asarray(out.ids), np.asarray(out.entropy)
    copied = training.report(list(ids))
    rows.append({'temperature': t, 'entropy_bits_per_char': float(entropy.mean() / np.log(2)),
                 'copied_ngram_fraction': copied})
    shown[t] = run.vocab.decode(ids[0][:_SHOWN.value])
    print(f'T={t}: entropy {rows[-1]["entropy_bits_per_char"]:.3f} bits/char, copied '
          + ', '.join(f'{n}-grams {f:.1%}' for n, f in copied.items()), flush=True)

  # The data itself, for reference: the same n-grams of held-out text (val split).
  val = corpus.val
  chunks = [val[i:i + _LENGTH.value] for i in range(0, len(val) - _LENGTH.value + 1, _LENGTH.value)]
  reference = training.report(chunks[:_NUM_SAMPLES.value])

  lines = [f'Run: `{runs.describe(run)}`; {_NUM_SAMPLES.value} samples x {_LENGTH.value} chars '
           f'per temperature, seed {_SEED.value}, primed with a newline.', '',
           '| temperature | entropy (bits/char) | 10-grams in train | 20-grams in train | '
           '30-grams in train |', '|---|---|---|---|---|']
  for r in rows:
    c = r['copied_ngram_fraction']
    lines.append(f'| {r["temperature"]} | {r["entropy_bits_per_char"]:.3f} | {c["10"]:.2%} | '
                 f'{c["20"]:.2%} | {c["30"]:.2%} |')
  lines.append(f'| held-out text (val split) | - | {reference["10"]:.2%} | {reference["20"]:.2%} '
               f'| {reference["30"]:.2%} |')
  for t, text in shown.items():
    lines += ['', f'### Temperature {t}', '', '```', text.strip('\n'), '```']
  out_dir = pathlib.Path(_OUT.value)
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / 'results.md').write_text('\n'.join(lines) + '\n', encoding='utf-8')
  (out_dir / 'results.json').write_text(json.dumps(
      {'run': runs.describe(run), 'num_samples': _NUM_SAMPLES.value, 'length': _LENGTH.value,
       'seed': _SEED.value, 'rows': rows, 'held_out_reference': reference}, indent=2))
  print(f'wrote {out_dir}/results.md and results.json')


if __name__ == '__main__':
  app.run(main)
