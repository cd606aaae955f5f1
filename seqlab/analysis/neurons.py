"""What the neurons learned: record every unit over a text and find interpretable ones.

  python -m seqlab.neurons --workdir RUN_DIR [--text FILE] [--out DIR] [--unit 1/c/42]

The model reads the text (default: the start of the run's held-out val split)
once, from the zero state, and every unit of every layer is recorded after each
character: for an LSTM the cell state `c` and the hidden state `h`, for a GRU,
RNN, minGRU or minLSTM `h`, for Hawk the RG-LRU's state `h` (Mamba and the GPT have
no such units: an error line). Each unit is then correlated (Pearson) with simple features of the
text; the best unit per feature is reported and drawn, as in Karpathy's post.

Writes to DIR: `units.md` / `units.json` (best units per feature),
`unit_<feature>.html|png` (the text coloured by that unit),
`predictions.html|png` (the top-5 next-character predictions at each of the
first 2,000 characters) and `activations.npz` (everything recorded, for your
own analysis).
"""

import dataclasses
import json
import pathlib
import re
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from seqlab.models import registry
from seqlab.analysis import neuron_pages
from seqlab.run import directory as rundir
from seqlab.run import load as runs
from seqlab.errors import SeqlabError


@dataclasses.dataclass
class Recording:
  text: str
  units: list[str]  # 'layer/kind/index', e.g. '1/c/42'; a column of `activations` each
  activations: np.ndarray  # N x U float32: every unit after reading each of the N symbols
  top_ids: np.ndarray  # N x K int32: the K most likely next symbols after each position
  top_probs: np.ndarray  # N x K float32: their probabilities


def record(run: runs.LoadedRun, text: str, top_k: int = 5) -> Recording:
  """Runs the model over `text` from the zero state and records every unit at every step."""
  cfg = run.model.config
  registry.neuron_states(cfg)  # a model without such states: one error line
  ids = run.vocab.encode(text)  # raises a clear error for unknown characters

  @jax.jit
  def forward(params, ids_1xN):
    (logits_1xNxV, _), variables = run.model.apply(
        {'params': params}, ids_1xN, registry.init_carry(cfg, 1), mutable=['intermediates'])
    probs = jax.nn.softmax(logits_1xNxV[0], axis=-1)
    top_probs, top_ids = jax.lax.top_k(probs, min(top_k, cfg.vocab_size))
    return variables['intermediates'], top_ids, top_probs

  intermediates, top_ids, top_probs = forward(run.params, jnp.asarray(ids)[None])
  columns, units = [], []
  for layer, kind, values_NxH in registry.recorded_states(cfg, intermediates):
    columns.append(np.asarray(values_NxH))
    units += [f'{layer}/{kind}/{j}' for j in range(values_NxH.shape[1])]
  return Recording(text, units, np.concatenate(columns, axis=1),
                   np.asarray(top_ids), np.asarray(top_probs))


# --- Features of the text: one value per character, describing the text around it.

_SPEAKER_LINE = re.compile(r"^[A-Z][A-Za-z' .,-]{0,40}:$")  # 'ROMEO:', 'First Citizen:'


def text_features(text: str) -> dict[str, np.ndarray]:
  """Per-character features (after reading that character) that a unit might track.

  Quote and bracket characters themselves count as inside; line features
  (speaker name, indentation) cover the line's characters, not its newline.
  """
  n = len(text)
  feats = {name: np.zeros(n, np.float32) for name in (
      'inside_quotes', 'inside_brackets', 'position_in_line', 'after_newline',
      'speaker_name', 'indentation')}
  in_quote, depth, column = False, 0, 0
  for i, ch in enumerate(text):
    if ch == '"':
      in_quote = not in_quote
    depth += ch in '([{'
    depth = max(depth - (ch in ')]}'), 0)
    feats['inside_quotes'][i] = in_quote or ch == '"' and not in_quote
    feats['inside_brackets'][i] = depth > 0 or ch in ')]}'
    feats['position_in_line'][i] = column
    feats['after_newline'][i] = ch == '\n'
    column = 0 if ch == '\n' else column + 1
  start = 0
  for line in text.split('\n'):  # line-level features, without the line's newline
    end = start + len(line)
    feats['speaker_name'][start:end] = bool(_SPEAKER_LINE.match(line))
    feats['indentation'][start:end] = len(line) - len(line.lstrip(' \t'))
    start = end + 1
  return feats


def correlations(activations_NxU: np.ndarray, feature_N: np.ndarray) -> np.ndarray | None:
  """Pearson r of every unit with the feature (U,); None if the feature is constant.

  Units that are constant over the text get r = 0.
  """
  f = feature_N.astype(np.float64) - feature_N.mean()
  if not np.any(f):
    return None
  a = activations_NxU.astype(np.float64)
  a = a - a.mean(axis=0)
  denom = np.sqrt((a * a).sum(axis=0) * (f * f).sum())
  with np.errstate(invalid='ignore', divide='ignore'):
    r = (a * f[:, None]).sum(axis=0) / denom
  return np.where(denom > 0, r, 0.0)


def best_units(recording: Recording, features: dict[str, np.ndarray], top: int = 3) -> dict:
  """For each feature: the `top` units by |r| (unit name, r), or the reason there are none."""
  report = {}
  for name, feature in features.items():
    r = correlations(recording.activations, feature)
    if r is None:
      report[name] = {'units': [], 'note': 'constant in this text'}
      continue
    order = np.argsort(-np.abs(r))[:top]
    report[name] = {'units': [{'unit': recording.units[j], 'r': round(float(r[j]), 4)}
                              for j in order], 'note': ''}
  return report


def report_markdown(report: dict, description: str, num_chars: int) -> str:
  lines = [f'# Interpretable units of {description}', '',
           f'Pearson correlation of every unit with features of {num_chars:,} characters of text. '
           'Units are `layer/state/index` (`c`: LSTM cell state, `h`: hidden state).', '',
           '| feature | best unit | r | runners-up |', '|---|---|---|---|']
  for name, entry in report.items():
    if not entry['units']:
      lines.append(f'| {name} | - | - | {entry["note"]} |')
      continue
    best, rest = entry['units'][0], entry['units'][1:]
    others = ', '.join(f'{u["unit"]} ({u["r"]:+.3f})' for u in rest)
    lines.append(f'| {name} | {best["unit"]} | {best["r"]:+.3f} | {others} |')
  return '\n'.join(lines) + '\n'


def analyse(run: runs.LoadedRun, text: str, out: pathlib.Path, extra_units=(),
            max_prediction_chars: int = 2000) -> dict:
  """Records, correlates and writes every output file into `out`; returns the report."""
  recording = record(run, text)
  features = text_features(text)
  report = best_units(recording, features)
  out.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(out / 'activations.npz', activations=recording.activations,
                      units=np.array(recording.units), top_ids=recording.top_ids,
                      top_probs=recording.top_probs, text=np.array(text))
  rundir.write_atomic(out / 'units.json', json.dumps(report, indent=2))
  rundir.write_atomic(out / 'units.md', report_markdown(report, runs.describe(run), len(text)))
  chosen = {name: e['units'][0]['unit'] for name, e in report.items() if e['units']}
  chosen.update({unit.replace('/', '_'): unit for unit in extra_units})
  for name, unit in chosen.items():
    values = recording.activations[:, recording.units.index(unit)]
    title = f'unit {unit}' + (f' (best for {name})' if name in report else '')
    neuron_pages.write_unit_page(out / f'unit_{name}', text, values, title)
  shown = min(len(text), max_prediction_chars)  # 6 cells a character: keep the page light
  symbols = [[run.vocab.decode([i]) for i in row] for row in recording.top_ids[:shown]]
  neuron_pages.write_predictions_page(out / 'predictions', text[:shown], symbols,
                                      recording.top_probs[:shown])
  return report


def define_flags() -> None:
  """The command's flags (defined only when run as a command, so the library imports cleanly)."""
  flags.DEFINE_string('workdir', None, 'Run directory of a training run.')
  flags.DEFINE_string('text', None, "Text file to read (default: the run's val split).")
  flags.DEFINE_integer('max_chars', 10_000, 'Read at most this many characters.')
  flags.DEFINE_string('out', None, 'Output folder (default: RUN_DIR/neurons).')
  flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step number.")
  flags.DEFINE_list('unit', [], 'Also draw these units (e.g. 1/c/42,0/h/7).')
  flags.mark_flags_as_required(['workdir'])


def _read_text(run: runs.LoadedRun, path: str | None, max_chars: int) -> str:
  if max_chars < 2:
    raise SeqlabError(f'--max_chars must be >= 2, got {max_chars}')
  if path is None:
    return run.vocab.decode(runs.load_corpus(run).val[:max_chars])
  file = pathlib.Path(path)
  if not file.is_file():
    raise SeqlabError(f'--text {path} is not a file')
  try:
    text = file.read_text(encoding='utf-8')[:max_chars]
  except UnicodeDecodeError:
    raise SeqlabError(f'--text {path} is not UTF-8 text') from None
  if len(text) < 2:
    raise SeqlabError(f'--text {path} has fewer than 2 characters')
  try:
    run.vocab.encode(text)
  except SeqlabError as e:
    raise SeqlabError(f'--text {path}: {e}; the model only reads the characters of its '
                      'training text') from None
  return text


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  try:
    run = runs.load_run(f.workdir, f.checkpoint)
    unknown = [u for u in f.unit if not re.fullmatch(r'\d+/[ch]/\d+', u)]
    if unknown:
      raise SeqlabError(f'--unit {unknown[0]!r}: write units as layer/state/index, e.g. 1/c/42')
    text = _read_text(run, f.text, f.max_chars)
    out = pathlib.Path(f.out) if f.out else run.workdir / 'neurons'
    if out.exists() and not out.is_dir():
      raise SeqlabError(f'--out {out} is a file; give a folder')
    cfg = run.model.config
    states = registry.neuron_states(cfg)
    for unit in f.unit:
      layer, kind, index = unit.split('/')
      if int(layer) >= cfg.num_layers or int(index) >= states.get(kind, 0):
        raise SeqlabError(f'--unit {unit} does not exist in a {registry.describe(cfg)} '
                          f'(its states: {", ".join(states)})')
    report = analyse(run, text, out, f.unit)
  except SeqlabError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(report_markdown(report, runs.describe(run), len(text)))
  print(f'wrote {out}/: units.md, units.json, unit_*.html|png, predictions.html|png, '
        'activations.npz')


def run() -> None:
  """The command: `python -m seqlab.neurons`."""
  define_flags()
  app.run(main)
