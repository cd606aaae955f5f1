"""What the equal-compute study runs: its entries (model, size, seed), the overrides that make
each entry's run out of its configs/zoo.py variant, and the launch.py command of a run.

Data and pure functions only (no JAX, no processes): experiments/zoo/study.py runs them,
experiments/zoo/report.py tabulates them.
"""

import dataclasses
import functools
import json
import math
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `python experiments/zoo/study.py` as well as `-m`
  sys.path.insert(0, str(ROOT))

# pylint: disable=wrong-import-position
from seqlab.models import registry  # the variants' 5M model groups (imports the models)
from seqlab.run import directory as rundir

HERE = pathlib.Path(__file__).resolve().parent
MODELS = ('lstm', 'mingru', 'minlstm', 'hawk', 'mamba', 'gpt')  # configs/zoo.py variants
SIZES = ('0.8M', '5M')
BUDGET_SECONDS = 900.0  # 15 minutes of train steps per run
SWEEP_FRACTION = 1 / 3  # the lr/dropout sweep's runs: a third of the budget
EVAL_WINDOW = 256  # eval.window for every entry: nanoGPT's block_size, so windows compare with it
SMOKE_EVAL_WINDOW = 32  # the smoke GPT's context
# The GPT reads windows of 256 as nanoGPT's does (its variant's context is 64): 8 x 256 chars a
# step, the 2,048 of the other models' 32 x 64.
GPT_WINDOWS = {'model.context': 256, 'data.seq_len': 256, 'data.batch_size': 8}
EVALS_PER_RUN = 10  # val evaluations (and checkpoints) per run: the curves' points
WARMUP_SHARE = 0.1  # a run's warmup is at most this share of its steps (short runs: below 200)
SPEED_STEPS = 150  # steps of a speed measurement
NOISE_MODEL, NOISE_SIZE = 'lstm', '0.8M'  # the noise floor: three seeds
TIE_SIGMAS = 2.0  # differences under this many noise-floor standard deviations are ties

# The study's runs live in the repository, without their checkpoints and console logs
# (.gitignore), so that it can be run in parts across machines and sessions: a finished run's
# config.json, results.json, samples and TensorBoard events are committed; an unfinished one
# resumes only where its checkpoints are.
DEFAULT_RUNS_DIR = HERE / 'runs'
SCALED_RUNS_DIR = ROOT / 'runs' / 'zoo-study'  # --budget_scale checks: never kept
DEFAULT_BUDGET_FILE = HERE / 'budget.json'
DEFAULT_HPARAMS_FILE = HERE / 'hparams.json'


@dataclasses.dataclass(frozen=True)
class Entry:
  """One run of the study: a configs/zoo.py variant at a size, with a seed; `recipe` names
  an attempt at the stretch goal outside the plan (a key of RECIPES; '' for the plan's);
  `dropout` makes it a candidate of the full-budget dropout choice (study.py `dropout`), run
  at that dropout instead of the model's chosen one."""
  model: str
  size: str
  seed: int
  recipe: str = ''
  dropout: float | None = None

  @property
  def key(self) -> str:
    """What its speed and budget belong to (its seeds share them)."""
    return (f'{self.model}-{self.size}' + (f'-{self.recipe}' if self.recipe else '')
            + (f'-d{self.dropout:g}' if self.dropout is not None else ''))

  @property
  def name(self) -> str:
    return f'{self.key}-s{self.seed}'

  def config(self, smoke: bool = False) -> str:
    return f'configs/zoo.py:{self.model}' + (',smoke' if smoke else '')

  def labels(self) -> tuple[str, ...]:
    """What `--only` may call it by: a plan entry by its name, key, model or size; an extra
    only by its name, key or recipe (`--only lstm` is the plan's LSTM runs)."""
    if self.recipe:
      return (self.name, self.key, self.recipe)
    return (self.name, self.key, self.model, self.size)


def _seeds(model: str, size: str) -> tuple[int, ...]:
  if size == '5M':
    return (0,)
  return (0, 1, 2) if (model, size) == (NOISE_MODEL, NOISE_SIZE) else (0, 1)


ENTRIES = tuple(Entry(m, s, seed) for s in SIZES for m in MODELS for seed in _seeds(m, s))

# Attempts at the stretch goal (<= 1.47 under windows of 256 in 15 minutes), outside the plan:
# the same budget rule, run with `--only RECIPE` (their speed is timed in pairs with their plan
# entry, whose measurement it scales; they have their own table).
RECIPES = {
    # Trained as they are judged: random windows of 256, each from the zero state, 8 a step
    # (the 2,048 characters of 32 x 64). Streams show a recurrent model the zero state once an
    # epoch; the windows protocol starts every window from it.
    'windows': {'data.batching': 'windows', 'data.seq_len': 256, 'data.batch_size': 8},
}
# Models added to the zoo after the plan's sitting (issue 30), outside the plan: one seed at
# 0.8M, their variant as it is (dropout 0: no full-budget dropout ladder), the learning rate
# from a three-point sweep at SWEEP_FRACTION of the budget (sweep_config.NEW_MODEL_SWEEPS),
# timed in pairs with the plan key of similar cost named here (`speed --only new
# --relative_to KEY`, whose measurement from the plan's sitting their steps scale).
NEW_MODELS_RECIPE = 'new'
RECIPES[NEW_MODELS_RECIPE] = {}  # the variant as it is
NEW_MODELS_LABEL = 'new models, one seed, added on {date} with a three-point lr sweep at a ' \
                   'third of the budget'
NEW_MODELS = {  # model: (the date it was added, the plan key it was timed against)
    'lru': ('2026-12-08', 'hawk-0.8M'),  # Hawk's RG-LRU is the nearest recurrence
    # seqlab/models/gla.py: 6.6-12.4k chars/s at 0.8M on the shared CPU (its docstring's
    # bench), about Hawk's 14.7k; the same streams of 32 x 64
    'gla': ('2026-12-08', 'hawk-0.8M'),
}
# Hawk at 5M first: the study's best model, with the largest gap between the protocols (0.044).
EXTRAS = (Entry('hawk', '5M', 0, 'windows'), Entry('lstm', '0.8M', 0, 'windows'),
          Entry('mingru', '0.8M', 0, 'windows'),
          *(Entry(model, '0.8M', 0, NEW_MODELS_RECIPE) for model in NEW_MODELS))
EVERY_ENTRY = ENTRIES + EXTRAS

# Dropout at the full budget (study.py `dropout`). The sweep's trials see a third of a run's
# epochs (6 of 18 for the LSTM), too few to overfit: the first full run with the sweep's pick
# (LSTM, dropout 0) ended 0.07 above the same run with dropout 0.1. So each 0.8M model's dropout
# is chosen from seed-0 runs of the full budget at the swept learning rate, climbing this ladder
# from the sweep's dropout while the final val loss improves; the winner's run is the model's
# seed-0 entry. The 5M entries keep the sweep's dropout: 15 minutes are 2-4 epochs for them,
# fewer than a sweep trial's.
DROPOUT_LADDER = (0.0, 0.1, 0.2, 0.3)
DROPOUT_SUBDIR = 'dropout'  # under the runs directory
FULL_BUDGET_SIZE = '0.8M'


def dropout_candidate(model: str, dropout: float) -> Entry:
  return Entry(model, FULL_BUDGET_SIZE, 0, dropout=dropout)


def is_new_model(entry: Entry) -> bool:
  """An entry of a model added after the plan (NEW_MODELS): swept like a plan model, with
  three learning rates at dropout 0, and no full-budget dropout ladder."""
  return entry.recipe == NEW_MODELS_RECIPE


def swept(entry: Entry) -> bool:
  """Whether `sweep` and `pick` take the entry's model: the plan's 0.8M models and the new
  models."""
  return entry.size == FULL_BUDGET_SIZE and (not entry.recipe or is_new_model(entry))


def sweep_key(entry: Entry) -> str:
  """The budget.json key whose steps a third of are a sweep trial's: the plan's
  <model>-0.8M, or a new model's own entry key (timed in pairs against its NEW_MODELS key)."""
  return entry.key if is_new_model(entry) else f'{entry.model}-{FULL_BUDGET_SIZE}'


def hparam_overrides(entry: Entry, hparams: dict) -> dict:
  """The swept values an entry trains with: the sweep's pick (hparams.json `overrides`), its
  dropout replaced at 0.8M by the full-budget choice (`full_budget.dropout`) where made, and
  in a candidate by the candidate's."""
  swept = hparams.get(entry.model, {})
  overrides = dict(swept.get('overrides', {}))
  chosen = swept.get('full_budget', {}).get('dropout')
  if entry.dropout is not None:
    overrides['model.dropout'] = entry.dropout
  elif entry.size == FULL_BUDGET_SIZE and chosen is not None:
    overrides['model.dropout'] = chosen
  return overrides


def run_dir(runs_dir: pathlib.Path, entry: Entry) -> pathlib.Path:
  """Where an entry's run lives: the plan's and the extras' in `runs_dir`, the dropout
  candidates' in its DROPOUT_SUBDIR."""
  return runs_dir / (DROPOUT_SUBDIR if entry.dropout is not None else '') / entry.name


def size_overrides(model: str, size: str, smoke: bool = False) -> dict:
  """The model fields that make `size` out of the 0.8M variant: the 5M size the variant
  declares (registry.group_of) where it differs from its 0.8M one (layers, width, heads; the context is GPT_WINDOWS's).
  {} at 0.8M and in smoke runs."""
  if size == '0.8M' or smoke:
    return {}
  small, big = registry.group_of(model, '0.8M'), registry.group_of(model, size)
  return {f'model.{k}': v for k, v in big.items() if k != 'context' and small.get(k) != v}


def select(only: str | None, entries=EVERY_ENTRY) -> list[Entry]:
  """`--only`: comma-separated entry names (lstm-0.8M-s0), keys (lstm-0.8M), models or sizes
  of the plan, names, keys or recipes of the extras (`Entry.labels`), or keys and names of
  dropout candidates (lstm-0.8M-d0.1). None: the plan."""
  if not only:
    return [e for e in entries if not e.recipe]
  wanted = [w.strip() for w in only.split(',') if w.strip()]
  chosen = [e for e in entries if any(w in e.labels() for w in wanted)]
  candidates = {label: e for e in (dropout_candidate(m, d) for m in MODELS
                                    for d in DROPOUT_LADDER) for label in (e.key, e.name)}
  chosen += [candidates[w] for w in dict.fromkeys(wanted) if w in candidates]
  unknown = [w for w in wanted
             if w not in candidates and not any(w in e.labels() for e in entries)]
  if unknown:
    raise SystemExit(f'error: --only {",".join(unknown)}: no such entry; entries: '
                     + ', '.join(e.name for e in entries)
                     + '; dropout candidates: <model>-0.8M-d<dropout> (entries.DROPOUT_LADDER)')
  return list(dict.fromkeys(chosen))


def load(path: pathlib.Path) -> dict:
  return rundir.load_json(path) or {}


def write_json(path: pathlib.Path, value: dict) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  rundir.write_atomic(path, json.dumps(value, indent=2) + '\n')


def update_json(path: pathlib.Path, change) -> dict:
  """Applies `change` to the file's current content and writes it: a command that runs for
  hours does not write back what it read at its start over what others wrote since."""
  value = load(path)
  change(value)
  write_json(path, value)
  return value


def _value(value) -> str:
  return repr(value) if isinstance(value, float) else str(value)


def launch_command(config: str, workdir: pathlib.Path, overrides: dict,
                   sweep: bool = False, fused: bool = False, parallel: int = 1) -> list[str]:
  """launch.py's command line, run in ROOT; a workdir inside ROOT is given relative to it, so
  that the command recorded for a kept run is the same in any checkout."""
  workdir = pathlib.Path(workdir)
  if workdir.is_absolute() and workdir.is_relative_to(ROOT):
    workdir = workdir.relative_to(ROOT)
  return [sys.executable, 'launch.py', '--config', config, '--workdir', str(workdir),
          *(['--sweep'] if sweep else []), *(['--fused'] if fused else []),
          *([f'--parallel={parallel}'] if parallel > 1 else []),
          *(f'--config.{key}={_value(value)}' for key, value in overrides.items())]


@functools.lru_cache(maxsize=None)
def variant_value(model: str, group: str, field: str, smoke: bool = False):
  """A field of the configs/zoo.py variant (ml_collections only: no JAX)."""
  from configs import zoo  # pylint: disable=g-import-not-at-top
  return zoo.get_config(model + (',smoke' if smoke else ''))[group][field]


def warmup_overrides(model: str, steps: int, smoke: bool = False) -> dict:
  """optim.warmup_steps, where the variant's (200) is over WARMUP_SHARE of `steps`: Mamba's
  sweep trials (497 steps) and 5M run (328) would otherwise spend 40-60% of their steps
  warming up. {} for runs long enough (their commands stay as they were)."""
  warmup = variant_value(model, 'optim', 'warmup_steps', smoke)
  short = max(1, int(steps * WARMUP_SHARE))
  return {'optim.warmup_steps': short} if short < warmup else {}


def eval_every(steps: int) -> int:
  """eval.every_steps (and checkpoints) of a run: EVALS_PER_RUN evaluations, the last at the
  final step (steps // 10 would add an eleventh a few steps before the end)."""
  return max(1, math.ceil(steps / EVALS_PER_RUN))


def window_overrides(model: str, smoke: bool) -> dict:
  """eval.window for every model; the GPT's context and batches to match (not in smoke runs)."""
  if smoke:
    return {'eval.window': SMOKE_EVAL_WINDOW}
  return {**(GPT_WINDOWS if model == 'gpt' else {}), 'eval.window': EVAL_WINDOW}


def run_overrides(entry: Entry, steps: int, hparams: dict, smoke: bool) -> dict:
  """Everything an entry's run sets on top of its configs/zoo.py variant."""
  every = eval_every(steps)
  return {**size_overrides(entry.model, entry.size, smoke),
          **window_overrides(entry.model, smoke), **RECIPES.get(entry.recipe, {}),
          **hparam_overrides(entry, hparams),
          **warmup_overrides(entry.model, steps, smoke),
          'seed': entry.seed, 'train.num_steps': steps,
          'eval.every_steps': every, 'log.checkpoint_every_steps': every}
