"""`train_and_evaluate(config, workdir)`: the training loop of a run.

The loop dispatches step t while a background thread has already assembled
the next batches on the devices (`seqlab.prefetch`); metrics come back to the
host only at log, eval and checkpoint steps. A run uses every device it sees (`seqlab.parallel`): the batch is split
over them, and each process of a multi-host run builds only its own rows.
Everything the run needs is checked before anything is written to the
run directory, so bad input never corrupts an existing run.
"""

import contextlib
import dataclasses
import json
import pathlib
import time

import jax
import numpy as np

from seqlab.run import checkpoint
from seqlab import data
from seqlab import interrupts
from seqlab.models import char_rnn as model_lib
from seqlab import optim
from seqlab import parallel
from seqlab import prefetch
from seqlab.run import recorder as recorder_lib
from seqlab.run import directory as rundir
from seqlab.run import lock as run_lock
from seqlab.run import write_failures
from seqlab import steps
from seqlab.errors import NonFiniteLossError, SeqlabError


@dataclasses.dataclass
class Setup:
  """Everything a run needs, built and validated from the config."""
  config_dict: dict
  corpus: data.Corpus
  model_config: model_lib.ModelConfig
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
  model_lib.ModelConfig.from_config(config.model, vocab_size=1)  # checks model.* before the data
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
  model_config = model_lib.ModelConfig.from_config(config.model, corpus.vocab.size)
  batches = data.make_batches(config.data.batching, corpus.train, config.data.batch_size,
                              config.data.seq_len, config.seed)
  saved_step = checkpoint.latest_step_on_disk(workdir)
  if saved_step is not None and saved_step > config.train.num_steps:
    raise SeqlabError(f'{workdir} is at step {saved_step}, past train.num_steps='
                      f'{config.train.num_steps}; raise it or use a new --workdir')
  schedule = optim.make_schedule(config.optim, config.train.num_steps, batches.batches_per_epoch)
  optimizer = optim.make_optimizer(config.optim, schedule)
  return Setup(config_dict, corpus, model_config, batches, schedule, optimizer, placement)


@dataclasses.dataclass(frozen=True)
class Todo:
  """What to do after a step."""
  log: bool
  eval: bool
  checkpoint: bool
  sample: bool


class Cadence:
  """Which steps log, evaluate, checkpoint and sample (config.log / config.eval)."""

  def __init__(self, config):
    self.log_config, self.num_steps = config.log, config.train.num_steps
    self.eval_every = config.eval.every_steps
    self.sample_steps = set(config.log.sample_steps)

  def at(self, done: int, stopping: bool = False) -> Todo:
    last = done == self.num_steps
    log = self.log_config
    is_eval = done % self.eval_every == 0 or last
    is_ckpt = done % log.checkpoint_every_steps == 0 or last or stopping
    is_sample = done in self.sample_steps or done % log.sample_every_steps == 0
    is_log = is_eval or is_ckpt or is_sample or done % log.every_steps == 0
    return Todo(is_log, is_eval, is_ckpt, is_sample)


class PendingMetrics:
  """Per-step metrics left on the device until `pull`, and the training time between pulls.

  The first step after `pause()` (and the very first, which compiles) waits for
  the device and starts the clock, so eval, checkpoint and compile time are not
  counted as training time. Nothing else blocks the device. The time the loop
  waits for its next batch is counted too: what data loading costs the step.
  """

  def __init__(self, chars_per_step: int):
    self.chars_per_step = chars_per_step
    self._metrics, self._clock, self._timed_steps, self._data_seconds = [], None, 0, 0.0

  def add(self, metrics, data_seconds: float) -> None:
    """A dispatched step's metrics, and the seconds the loop waited for its batch."""
    self._metrics.append(metrics)
    if self._clock is None:
      jax.block_until_ready(metrics)
      self._clock = time.perf_counter()
    else:
      self._timed_steps += 1
      self._data_seconds += data_seconds

  def pause(self) -> None:
    self._clock = None

  def pull(self) -> tuple[list[dict], int, float, float]:
    """(host metrics of each pending step, chars in the timed steps, their seconds, and the
    seconds of those spent waiting for batches)."""
    host = jax.device_get(self._metrics)
    now = time.perf_counter()
    seconds = now - self._clock if self._clock is not None and self._timed_steps else 0.0
    timed_chars = self._timed_steps * self.chars_per_step if seconds else 0
    data_seconds = self._data_seconds if seconds else 0.0
    self._metrics, self._clock, self._timed_steps, self._data_seconds = [], now, 0, 0.0
    return host, timed_chars, seconds, data_seconds


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
  model = model_lib.CharLM(setup.model_config)
  placement = setup.placement
  recorder = recorder_lib.RunRecorder(config, workdir, setup, model,
                                      *recorder_lib.make_tools(model, config.log.sample_length),
                                      placement=placement)
  num_steps, batch_size = config.train.num_steps, config.data.batch_size
  # Placed on the mesh before a checkpoint is restored into its shardings.
  fresh_state = lambda: placement.put_state(
      steps.init_state(setup.model_config, setup.optimizer, batch_size, config.seed))
  prefetcher = None
  try:
    state = recorder.restore(fresh_state())
    state_shardings = placement.state_shardings(state)
    rep, split = placement.replicated, placement.batch_split
    train_step = jax.jit(steps.make_train_step(model, setup.optimizer, setup.schedule),
                         in_shardings=(state_shardings, split, split, rep, rep),
                         out_shardings=(state_shardings, rep), donate_argnums=0)
    rows = placement.local_rows(batch_size)
    start = int(state.step)
    recorder.describe(state, start)
    if stop_at_step is not None and start >= stop_at_step:
      recorder.print(f'already at step {start} >= {stop_at_step}; nothing to do')
      return None
    cadence = Cadence(config)
    pending = PendingMetrics(chars_per_step=batch_size * config.data.seq_len)
    val = None
    step = start

    def make_batch(step):  # runs in the prefetch thread: this process's rows, on the devices
      inputs, targets, reset = setup.batches.batch(step, rows)
      return placement.put_batch(inputs, batch_size), placement.put_batch(targets, batch_size), \
          np.bool_(reset)

    prefetcher = prefetch.Prefetcher(make_batch, start, num_steps)
    while step < num_steps:
      waited = prefetcher.wait_seconds
      inputs, targets, reset = prefetcher.get(step)
      state, metrics = train_step(state, inputs, targets, reset,
                                  np.float32(recorder.meta['lr_scale']))
      pending.add(metrics, prefetcher.wait_seconds - waited)
      step = done = step + 1
      stopping = done == stop_at_step or stop_request.signum is not None
      todo = cadence.at(done, stopping)
      try:  # a NaN/Inf surfaces here: in the pulled metrics, or in the params to be saved
        if todo.log:
          recorder.log_train(done, *pending.pull(), start)
        if todo.eval or todo.checkpoint or todo.sample:
          pending.pause()  # what follows is not training time
        if todo.eval:
          val = recorder.validate(done, state)
        if todo.checkpoint:
          recorder.save('latest', done, state)
      except NonFiniteLossError as error:
        state = recorder.nonfinite(error, fresh_state())
        step = int(state.step)
        pending.pause()
        prefetcher.close()
        prefetcher = prefetch.Prefetcher(make_batch, step, num_steps)
        continue
      if todo.sample:
        recorder.sample(done, state.params)
      if stopping:
        recorder.ckpts.wait()
        if stop_request.signum is not None:
          raise interrupts.Interrupted(stop_request.signum, done)
        recorder.print(f'stopped after step {done}; re-run the same command to continue')
        return None
    return recorder.finish(state, val)
  finally:
    if prefetcher is not None:
      prefetcher.close()
    recorder.close()
