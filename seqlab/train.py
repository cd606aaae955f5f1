"""`train_and_evaluate(config, workdir)`: the training loop of a run.

The loop (`seqlab.loop`) dispatches step t while a background thread has
already assembled the next batches on the devices (`seqlab.prefetch`); metrics
come back to the host only at log, eval and checkpoint steps. A run uses every device it sees (`seqlab.parallel`): the batch is split
over them, and each process of a multi-host run builds only its own rows.
Everything the run needs is checked before anything is written to the
run directory, so bad input never corrupts an existing run.
"""

import contextlib
import dataclasses
import json
import pathlib

import jax
import numpy as np

from seqlab.run import checkpoint
from seqlab import cpu_estimate
from seqlab import data
from seqlab import evaluate as evaluate_lib
from seqlab import interrupts
from seqlab import loop
from seqlab.models import registry
from seqlab import optim
from seqlab import parallel
from seqlab import prefetch
from seqlab.run import recorder as recorder_lib
from seqlab.run import directory as rundir
from seqlab.run import lock as run_lock
from seqlab.run import write_failures
from seqlab import steps
from seqlab.errors import SeqlabError


@dataclasses.dataclass
class Setup:
  """Everything a run needs, built and validated from the config."""
  config_dict: dict
  corpus: data.Corpus
  model_config: object  # the dataclass of `seqlab.models.registry`
  batches: data.StreamBatches | data.WindowBatches
  schedule: object
  optimizer: object
  placement: parallel.Placement


def _positive(config, *names):
  for name in names:
    group, field = name.split('.')
    if config[group][field] < 1:
      raise SeqlabError(f'{name} must be >= 1, got {config[group][field]}')


def build(config, workdir: pathlib.Path) -> Setup:
  """Loads the data and checks the config against it and the run directory; writes nothing."""
  config_dict = json.loads(config.to_json_best_effort())
  if workdir.exists() and not workdir.is_dir():
    raise SeqlabError(f'--workdir {workdir} is a file, not a run directory; use another path')
  model_check = registry.config_of(config.model, vocab_size=1)  # model.* before the data
  _check_window(config, model_check)
  evaluate_lib.check_config(config.eval, model_check)
  optim.check(config.optim)
  _positive(config, 'data.batch_size', 'data.seq_len', 'train.num_steps', 'eval.every_steps',
            'eval.num_streams', 'eval.seq_len', 'log.every_steps', 'log.checkpoint_every_steps',
            'log.sample_every_steps', 'log.sample_length', 'data.max_vocab_size')
  placement = parallel.Placement(config.parallel.num_devices)
  placement.check_batch_size(config.data.batch_size)
  if config.train.on_nonfinite not in ('stop', 'rollback'):
    raise SeqlabError(f"train.on_nonfinite must be 'stop' or 'rollback', "
                      f'got {config.train.on_nonfinite!r}')
  if not 0 < config.train.rollback_lr_factor < 1 or config.train.max_rollbacks < 0:
    raise SeqlabError('need 0 < train.rollback_lr_factor < 1 and train.max_rollbacks >= 0, got '
                      f'{config.train.rollback_lr_factor} and {config.train.max_rollbacks}')
  rundir.check_compatible(workdir, config_dict)
  vocab_path = workdir / data.VOCAB_FILENAME
  vocab = data.Vocabulary.load(vocab_path) if vocab_path.exists() else None
  corpus = data.load_corpus_of(config.data, vocab)
  path = config.data.path or config.data.dataset
  if len(corpus.val) < 2:
    raise SeqlabError(f'the val split of {path} has {len(corpus.val)} symbols; use more text '
                      'or a larger data.val_fraction')
  model_config = registry.config_of(config.model, corpus.vocab.size)
  # config.json names the module of a model from outside the package, a file by its absolute
  # path (the config may name it relative to the working directory, or not at all when its
  # process imported the model), so that a fresh process given only the run directory
  # (resume, sample, score) imports it again.
  source = config_dict['model'].get(registry.SOURCE_KEY)
  if not source:
    config_dict['model'].update(registry.source_field(registry.of(model_config)))
  elif registry.is_file(source):
    config_dict['model'][registry.SOURCE_KEY] = str(pathlib.Path(source).expanduser().resolve())
  batches = data.make_batches(config.data.batching, corpus.train, config.data.batch_size,
                              config.data.seq_len, config.seed)
  saved_step = checkpoint.latest_step_on_disk(workdir)
  if saved_step is not None and saved_step > config.train.num_steps:
    raise SeqlabError(f'{workdir} is at step {saved_step}, past train.num_steps='
                      f'{config.train.num_steps}; raise it or use a new --workdir')
  schedule = optim.make_schedule(config.optim, config.train.num_steps, batches.batches_per_epoch)
  optimizer = optim.make_optimizer(config.optim, schedule)
  return Setup(config_dict, corpus, model_config, batches, schedule, optimizer, placement)


def _check_window(config, model_config) -> None:
  """A model with a window (the GPT) reads random windows and is evaluated window by window."""
  window = registry.window(model_config)
  if window is None:
    return
  if config.data.batching != 'windows':
    raise SeqlabError(f"a {config.model.name} cannot carry state past its window of {window} "
                      "tokens; set --config.data.batching=windows")
  if config.data.seq_len > window:
    raise SeqlabError(f'data.seq_len={config.data.seq_len} is longer than the '
                      f"{config.model.name}'s context of {window} tokens; "
                      f'set --config.data.seq_len={window} or less')


class AloneProgram:
  """The steps of one run: its jitted step over the run's devices, fed by a prefetch thread."""
  can_roll_back = True

  def __init__(self, config, setup: 'Setup', model, state: steps.TrainState):
    placement, batch_size = setup.placement, config.data.batch_size
    state_shardings = placement.state_shardings(state)
    rep, split = placement.replicated, placement.batch_split
    self._train_step = jax.jit(steps.make_train_step(model, setup.optimizer, setup.schedule),
                               in_shardings=(state_shardings, split, split, rep, rep),
                               out_shardings=(state_shardings, rep), donate_argnums=0)
    rows = placement.local_rows(batch_size)

    def make_batch(step):  # runs in the prefetch thread: this process's rows, on the devices
      inputs, targets, reset = setup.batches.batch(step, rows)
      return placement.put_batch(inputs, batch_size), placement.put_batch(targets, batch_size), \
          np.bool_(reset)

    self._make_batch, self._num_steps = make_batch, config.train.num_steps
    self.state = state
    self._prefetcher = prefetch.Prefetcher(make_batch, int(state.step), self._num_steps)

  def step(self, step: int, lr_scales: np.ndarray):
    waited = self._prefetcher.wait_seconds
    inputs, targets, reset = self._prefetcher.get(step)
    self.state, metrics = self._train_step(self.state, inputs, targets, reset,
                                           np.float32(lr_scales[0]))
    return metrics, self._prefetcher.wait_seconds - waited

  def state_of(self, i: int) -> steps.TrainState:
    del i
    return self.state

  def metrics_of(self, host_metrics: list[dict], i: int) -> list[dict]:
    del i
    return host_metrics

  def restart(self, i: int, state: steps.TrainState) -> None:
    del i
    self.state = state
    self._prefetcher.close()
    self._prefetcher = prefetch.Prefetcher(self._make_batch, int(state.step), self._num_steps)

  def close(self) -> None:
    self._prefetcher.close()


def train_and_evaluate(config, workdir, stop_at_step: int | None = None) -> dict | None:
  """Trains (or resumes) the run in `workdir`; returns the contents of results.json.

  `stop_at_step` stops early after that step with a checkpoint, as a preempted
  run would (returns None); re-running continues from there. SIGTERM/SIGINT do
  the same after the current step and raise `interrupts.Interrupted`. The run
  directory is locked against a second run for the whole run (by process 0 of
  a multi-host run; the other processes write nothing but their checkpoint shards).
  """
  workdir = pathlib.Path(workdir)
  setup = build(config, workdir)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    lock = run_lock.hold(workdir) if parallel.is_primary() else contextlib.nullcontext()
    with lock, interrupts.catch_stop_signals() as stop_request:
      return _train(config, workdir, setup, stop_at_step, stop_request)
  except OSError as error:  # a refused write of samples.md, results.json, ...: one error line
    raise write_failures.from_os_error(error, workdir) or error from None


def _train(config, workdir: pathlib.Path, setup: Setup, stop_at_step: int | None,
           stop_request: interrupts.StopRequest) -> dict | None:
  model = registry.module_of(setup.model_config)
  placement = setup.placement
  member = loop.Member(config, setup, recorder_lib.RunRecorder(config, workdir, setup),
                       placement)
  # Placed on the mesh before a checkpoint is restored into its shardings.
  fresh_state = lambda: placement.put_state(
      steps.init_state(setup.model_config, setup.optimizer, config.data.batch_size, config.seed))
  program = None
  try:
    state = loop.resume(member, fresh_state())
    start = int(state.step)
    num_params = registry.count_params(state.params)
    member.recorder.describe(num_params, start, placement.describe())
    if member.recorder.primary:  # a config sized for an accelerator says so at once on a CPU
      note = cpu_estimate.note(placement.devices[0].platform, placement.num_devices, num_params,
                               config.data.batch_size * config.data.seq_len,
                               config.train.num_steps - start)
      if note:
        member.recorder.print(note)
    if stop_at_step is not None and start >= stop_at_step:
      member.recorder.print(f'already at step {start} >= {stop_at_step}; nothing to do')
      return None
    program = AloneProgram(config, setup, model, state)
    results = loop.run(program, [member], loop.Tools.make(model, config.log.sample_length), start,
                       stop_request, stop_at_step, fresh_state)
    return results[0] if results is not None else None
  finally:
    if program is not None:
      program.close()
    member.recorder.close()
