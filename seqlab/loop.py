"""The one training loop: a run alone, or a fused group of sweep trials, step after step.

What differs between the two is a `Program` (`seqlab.train.AloneProgram`,
`seqlab.sweeps.fused.FusedProgram`): how a step is dispatched and where each
member's state is. Everything else is here, once: when to log, evaluate,
checkpoint and sample (`Cadence`), timing without host syncs (`PendingMetrics`),
the NaN policy (`seqlab.nonfinite`), stopping on a signal, and the final
results. A run alone is a group of one, with the same steps and numbers.
"""

import dataclasses
import time
from typing import Protocol

import jax
import numpy as np

from seqlab import data
from seqlab import evaluate as evaluate_lib
from seqlab import generate
from seqlab import interrupts
from seqlab import nonfinite
from seqlab import steps
from seqlab.analysis import novelty
from seqlab.errors import NonFiniteLossError
from seqlab.errors import SeqlabError
from seqlab.models import registry


@dataclasses.dataclass(frozen=True)
class Todo:
  """What to do after a step."""
  log: bool
  eval: bool
  checkpoint: bool
  sample: bool

  @property
  def needs_state(self) -> bool:
    return self.eval or self.checkpoint or self.sample


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
    """A dispatched step's metrics, and the seconds the loop waited for its batch.

    At most `evaluate.MAX_IN_FLIGHT` steps run ahead of the device: it waits for the step
    dispatched that many steps ago (long done when the device keeps up). Unbounded (up to
    log.every_steps = 50 steps), a run on a CPU split into 2 devices hung in a train step's
    all-reduce after 6,250 steps (the deadlock that evaluate.py's bound prevents).
    """
    self._metrics.append(metrics)
    if self._clock is None:
      jax.block_until_ready(metrics)
      self._clock = time.perf_counter()
    else:
      self._timed_steps += 1
      self._data_seconds += data_seconds
    if len(self._metrics) > evaluate_lib.MAX_IN_FLIGHT:
      jax.block_until_ready(self._metrics[-evaluate_lib.MAX_IN_FLIGHT - 1])

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


class Program(Protocol):
  """How the steps of a run (one member) or of a fused group (K members) run."""
  can_roll_back: bool  # after a NaN: roll a member back (alone), or stop it (fused)

  def step(self, step: int, lr_scales: np.ndarray):
    """Dispatches step `step`; returns (device metrics, seconds spent waiting for data)."""

  def state_of(self, i: int) -> steps.TrainState:
    """Member i's current state."""

  def metrics_of(self, host_metrics: list[dict], i: int) -> list[dict]:
    """Member i's share of pulled metrics."""

  def restart(self, i: int, state: steps.TrainState) -> None:
    """Continues from `state` (a rollback)."""


@dataclasses.dataclass(frozen=True)
class Tools:
  """The jitted functions every member of one model shares."""
  eval_step: object
  all_finite: object
  sample: object

  @classmethod
  def make(cls, model, sample_length: int) -> 'Tools':
    return cls(jax.jit(steps.make_eval_step(model)), jax.jit(steps.all_finite),
               generate.make_sampler(model, sample_length))


@dataclasses.dataclass
class Member:
  """One run being trained: its config, data and recorder, and where the loop is with it."""
  config: object
  setup: object  # seqlab.train.Setup
  recorder: object  # seqlab.run.recorder.RunRecorder
  placement: object = None  # seqlab.parallel.Placement; None: one device (fused trials)
  name: str = ''
  val: dict | None = None
  alive: bool = True
  error: str | None = None

  def evaluate(self, tools: Tools, params, tokens) -> dict:
    return evaluate_lib.evaluate(tools.eval_step, params, self.setup.model_config, tokens,
                                 self.config.eval, self.placement)


def resume(member: Member, fresh_state) -> steps.TrainState:
  """The member's latest checkpoint (or `fresh_state`), with its run directory opened."""
  restored = member.recorder.ckpts.restore('latest', fresh_state)
  state, meta = restored if restored is not None else (fresh_state, None)
  member.recorder.open(int(state.step), meta)
  return state


def run(program: Program, members: list[Member], tools: Tools, start: int,
        stop_request: interrupts.StopRequest, stop_at_step: int | None = None,
        fresh_state=None) -> list[dict] | None:
  """Trains from step `start` to train.num_steps; returns each live member's results.

  Returns None if it stopped at `stop_at_step` (with checkpoints); raises
  `interrupts.Interrupted` after checkpointing on SIGTERM/SIGINT. `fresh_state()`
  is where a rollback with no checkpoint yet goes back to.
  """
  config = members[0].config
  num_steps = config.train.num_steps
  cadence = Cadence(config)
  pending = PendingMetrics(chars_per_step=config.data.batch_size * config.data.seq_len)
  step = start
  while step < num_steps:
    lr_scales = np.asarray([m.recorder.meta['lr_scale'] if m.alive else 0.0 for m in members],
                           np.float32)
    metrics, data_seconds = program.step(step, lr_scales)
    pending.add(metrics, data_seconds)
    done = step + 1
    stopping = done == stop_at_step or stop_request.signum is not None
    todo = cadence.at(done, stopping)
    pulled = pending.pull() if todo.log else None
    if todo.needs_state:
      pending.pause()  # what follows is not training time
    rolled_back = None
    for i, member in enumerate(members):
      if not member.alive:
        continue
      state = program.state_of(i) if todo.needs_state else None
      try:  # a NaN/Inf surfaces here: in the pulled metrics, or in the params to be saved
        _record(member, tools, program.metrics_of(pulled[0], i) if pulled else None,
                pulled, done, todo, state, start)
      except NonFiniteLossError as error:
        try:
          rolled_back = nonfinite.after(error, member.recorder, fresh_state and fresh_state(),
                                        program.can_roll_back)
        except NonFiniteLossError as final:
          if program.can_roll_back:
            raise
          member.alive, member.error = False, str(final)
          member.recorder.print(f'error: {final}')
          continue
        program.restart(i, rolled_back)
        break
      if todo.sample:
        member.recorder.log_sample(done, _sample_text(member, tools, state.params, done))
    if rolled_back is not None:
      step = int(rolled_back.step)
      pending.pause()
      continue
    step = done
    if stopping:
      for member in members:
        member.recorder.ckpts.wait()
      if stop_request.signum is not None:
        raise interrupts.Interrupted(stop_request.signum, done)
      members[0].recorder.print(f'stopped after step {done}; re-run the same command to continue')
      return None
  return [finish(m, tools, program.state_of(i)) for i, m in enumerate(members) if m.alive]


def _record(member: Member, tools: Tools, host_metrics, pulled, done: int, todo: Todo, state,
            start: int) -> None:
  """Logs, evaluates and checkpoints one member after step `done`, as `todo` says."""
  if todo.log:
    member.recorder.log_train(done, host_metrics, *pulled[1:], start)
  if todo.eval:
    member.val = member.evaluate(tools, state.params, member.setup.corpus.val)
    if member.recorder.log_val(done, member.val):
      _save(member, tools, 'best', done, state)
  if todo.checkpoint:
    _save(member, tools, 'latest', done, state)


def _save(member: Member, tools: Tools, which: str, step: int, state) -> None:
  """Checkpoints `state`; raises NonFiniteLossError instead of saving NaN/Inf parameters."""
  if not bool(tools.all_finite(state.params)):
    raise NonFiniteLossError(f'parameters became NaN/Inf by step {step}; not saved')
  member.recorder.save(which, step, state)


def _prime_ids(vocab: data.Vocabulary, prime: str) -> np.ndarray:
  """The ids of the text that training samples start from; the first symbol if it is unusable."""
  try:
    return vocab.encode(prime) if prime else np.zeros(1, np.int32)
  except SeqlabError:  # e.g. the default '\n' in a text without newlines
    return np.zeros(1, np.int32)


def _sample_text(member: Member, tools: Tools, params, done: int) -> str:
  log, vocab = member.config.log, member.setup.corpus.vocab
  prime = _prime_ids(vocab, log.sample_prime)
  ids = tools.sample(params, prime, 1, jax.random.fold_in(
      jax.random.PRNGKey(member.config.seed), done), log.sample_temperature).ids
  return vocab.decode(prime) + vocab.decode(ids[0])


def finish(member: Member, tools: Tools, state) -> dict:
  """Test loss (best checkpoint), novelty and results.json of a member that trained to the end."""
  recorder, config, corpus = member.recorder, member.config, member.setup.corpus
  recorder.ckpts.wait()
  val = member.val
  if val is None:  # the run was already complete: evaluate the final state again
    val = member.evaluate(tools, state.params, corpus.val)
  results = recorder.results(val, registry.count_params(state.params))
  best = recorder.ckpts.restore('best', state)
  best_params = best[0].params if best else state.params
  if len(corpus.test) >= 2:
    test = member.evaluate(tools, best_params, corpus.test)
    results.update(test_loss=test['loss'], test_bpc=test['bpc'],
                   **evaluate_lib.by_protocol('test', test))
  if config.log.novelty_num_samples:
    samples = tools.sample(best_params, _prime_ids(corpus.vocab, config.log.sample_prime),
                           config.log.novelty_num_samples, jax.random.PRNGKey(config.seed),
                           config.log.sample_temperature).ids
    results['copied_ngram_fraction'] = novelty.TrainingNgrams(corpus.train).report(
        np.asarray(samples))
  recorder.write_results(results)
  return results
