"""Loading a trained run for analysis: its config, vocabulary, model and parameters.

`load_run(RUN_DIR, 'best' | 'latest' | STEP)` reads only; it never writes into
the run directory, so sampling or analysing a run that is still training is safe.
"""

import dataclasses
import pathlib
import sys

import jax
from ml_collections import config_dict

from seqlab.run import checkpoint
from seqlab import data
from seqlab.models import registry
from seqlab import optim
from seqlab.run import directory as rundir
from seqlab import steps
from seqlab.errors import SeqlabError


@dataclasses.dataclass
class LoadedRun:
  workdir: pathlib.Path
  config: config_dict.ConfigDict
  vocab: data.Vocabulary
  model: object  # the Flax module of `seqlab.models.registry`
  params: dict
  step: int  # the training step of the checkpoint the parameters come from
  which: str  # 'best' or 'latest': the checkpoint folder they were read from


def _pick(workdir: pathlib.Path, checkpoint_name: str) -> tuple[str, int]:
  """(folder, step) of the checkpoint that `checkpoint_name` asks for."""
  found = {which: checkpoint.steps_on_disk(workdir, which) for which in ('best', 'latest')}
  if not found['best'] and not found['latest']:
    raise SeqlabError(f'{workdir} has no checkpoint yet; train it first '
                      f'(python launch.py --config ... --workdir {workdir})')
  if checkpoint_name in ('best', 'latest'):
    if found[checkpoint_name]:
      return checkpoint_name, found[checkpoint_name][-1]
    other = 'latest' if checkpoint_name == 'best' else 'best'
    print(f'note: {workdir} has no {checkpoint_name!r} checkpoint; using {other!r} '
          f'(step {found[other][-1]})', file=sys.stderr)
    return other, found[other][-1]
  if not checkpoint_name.isdigit():
    raise SeqlabError(f'--checkpoint must be best, latest or a step number, got '
                      f'{checkpoint_name!r}')
  step = int(checkpoint_name)
  for which in ('best', 'latest'):
    if step in found[which]:
      return which, step
  raise SeqlabError(f'{workdir} has no checkpoint at step {step}; it has '
                    f'best={found["best"]} latest={found["latest"]}')


def load_config(workdir: pathlib.Path) -> config_dict.ConfigDict:
  saved = rundir.load_json(pathlib.Path(workdir) / rundir.CONFIG_FILENAME)
  if saved is None:
    raise SeqlabError(f'{workdir} is not a seqlab run directory (no {rundir.CONFIG_FILENAME}); '
                      'pass the --workdir of a training run')
  return config_dict.ConfigDict(saved)


def load_run(workdir, checkpoint_name: str = 'best',
             matmul_dtype: str | None = 'float32') -> LoadedRun:
  """The model and parameters of a run directory, from the checkpoint asked for.

  The parameters land on this process's first device, whatever topology the run
  was trained on (N CPU devices, GPUs, several hosts). `matmul_dtype` replaces the
  run's `model.matmul_dtype` (default float32: a run trained with bf16 matmuls is
  analysed in full precision; the parameters are float32 either way); None keeps it.
  """
  workdir = pathlib.Path(workdir)
  if not workdir.is_dir():
    raise SeqlabError(f'run directory {workdir} does not exist')
  config = load_config(workdir)
  vocab_path = workdir / data.VOCAB_FILENAME
  if not vocab_path.exists():
    raise SeqlabError(f'{workdir} has no {data.VOCAB_FILENAME}; it is not a complete run directory')
  vocab = data.Vocabulary.load(vocab_path)
  if matmul_dtype is not None and 'matmul_dtype' in config.model:  # absent: a zoo run before bf16
    config.model.matmul_dtype = matmul_dtype
  model_config = registry.config_of(config.model, vocab.size)
  which, step = _pick(workdir, checkpoint_name)

  # The saved TrainState's structure, without allocating it; only the params are kept.
  schedule = optim.make_schedule(config.optim, config.train.num_steps, 1)
  optimizer = optim.make_optimizer(config.optim, schedule)
  abstract = jax.eval_shape(lambda: steps.init_state(
      model_config, optimizer, config.data.batch_size, config.seed))
  state, _ = checkpoint.read(workdir / 'checkpoints' / which / str(step), abstract,
                             sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  return LoadedRun(workdir, config, vocab, registry.module_of(model_config), state.params, step,
                   which)


def describe(run: LoadedRun) -> str:
  cfg = run.model.config
  return (f'{run.workdir}: {registry.describe(cfg)}, vocab {run.vocab.size}, '
          f'{run.which} checkpoint at step {run.step}')


def load_corpus(run: LoadedRun) -> data.Corpus:
  """The run's data, split as in training (its val split is the held-out text)."""
  config = run.config
  return data.load_corpus_of(config.data, run.vocab)
