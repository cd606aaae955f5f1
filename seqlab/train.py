"""`train_and_evaluate(config, workdir)`: the training loop of a run.

The loop dispatches step t, then assembles batch t+1 on the host while the
device works; metrics come back to the host only at log, eval and checkpoint
steps. Everything the run needs is checked before anything is written to the
run directory, so bad input never corrupts an existing run.
"""

import dataclasses
import json
import math
import pathlib
import time

import jax
import numpy as np

from seqlab import checkpoint
from seqlab import data
from seqlab import evaluate as evaluate_lib
from seqlab import interrupts
from seqlab import metrics_writer
from seqlab import model as model_lib
from seqlab import novelty
from seqlab import optim
from seqlab import rundir
from seqlab import run_lock
from seqlab import sampling
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
  if config.train.on_nonfinite not in ('stop', 'rollback'):
    raise SeqlabError(f"train.on_nonfinite must be 'stop' or 'rollback', "
                      f'got {config.train.on_nonfinite!r}')
  if not 0 < config.train.rollback_lr_factor < 1 or config.train.max_rollbacks < 0:
    raise SeqlabError('need 0 < train.rollback_lr_factor < 1 and train.max_rollbacks >= 0, got '
                      f'{config.train.rollback_lr_factor} and {config.train.max_rollbacks}')
  rundir.check_compatible(workdir, config_dict)
  vocab_path = workdir / data.VOCAB_FILENAME
  vocab = data.Vocabulary.load(vocab_path) if vocab_path.exists() else None
  path = data.resolve_path(config.data.dataset, config.data.path)
  corpus = data.load_corpus(path, config.data.vocab, config.data.val_fraction,
                            config.data.test_fraction, vocab, config.data.max_vocab_size)
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
  return Setup(config_dict, corpus, model_config, batches, schedule, optimizer)


def _prime_ids(vocab: data.Vocabulary, prime: str) -> np.ndarray:
  """The ids of the text that training samples start from; the first symbol if it is unusable."""
  try:
    return vocab.encode(prime) if prime else np.zeros(1, np.int32)
  except SeqlabError:  # e.g. the default '\n' in a text without newlines
    return np.zeros(1, np.int32)


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds // 60 % 60:02d}m' if seconds >= 3600 else \
      f'{seconds // 60}m{seconds % 60:02d}s'


class PendingMetrics:
  """Per-step metrics left on the device until `pull`, and the training time between pulls.

  The first step after `pause()` (and the very first, which compiles) waits for
  the device and starts the clock, so eval, checkpoint and compile time are not
  counted as training time. Nothing else blocks the device.
  """

  def __init__(self, chars_per_step: int):
    self.chars_per_step = chars_per_step
    self._metrics, self._clock, self._timed_steps = [], None, 0

  def add(self, metrics) -> None:
    self._metrics.append(metrics)
    if self._clock is None:
      jax.block_until_ready(metrics)
      self._clock = time.perf_counter()
    else:
      self._timed_steps += 1

  def pause(self) -> None:
    self._clock = None

  def pull(self) -> tuple[list[dict], int, float]:
    """(host metrics of each pending step, chars in the timed steps, their seconds)."""
    host = jax.device_get(self._metrics)
    now = time.perf_counter()
    seconds = now - self._clock if self._clock is not None and self._timed_steps else 0.0
    timed_chars = self._timed_steps * self.chars_per_step if seconds else 0
    self._metrics, self._clock, self._timed_steps = [], now, 0
    return host, timed_chars, seconds


def train_and_evaluate(config, workdir, stop_at_step: int | None = None) -> dict | None:
  """Trains (or resumes) the run in `workdir`; returns the contents of results.json.

  `stop_at_step` stops early after that step with a checkpoint, as a preempted
  run would (returns None); re-running continues from there. SIGTERM/SIGINT do
  the same after the current step and raise `interrupts.Interrupted`. The run
  directory is locked against a second process for the whole run.
  """
  workdir = pathlib.Path(workdir)
  setup = build(config, workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with run_lock.hold(workdir), interrupts.catch_stop_signals() as stop_request:
    return _train(config, workdir, setup, stop_at_step, stop_request)


def _train(config, workdir: pathlib.Path, setup: Setup, stop_at_step: int | None,
           stop_request: interrupts.StopRequest) -> dict | None:
  corpus, model_config = setup.corpus, setup.model_config

  model = model_lib.CharLM(model_config)
  train_step = jax.jit(steps.make_train_step(model, setup.optimizer, setup.schedule),
                       donate_argnums=0)
  eval_step = jax.jit(steps.make_eval_step(model))
  all_finite = jax.jit(steps.all_finite)
  sample = sampling.make_sampler(model, config.log.sample_length)
  prime_ids = _prime_ids(corpus.vocab, config.log.sample_prime)
  evaluate = lambda params, tokens: evaluate_lib.evaluate(
      eval_step, params, model_config, tokens, config.eval.num_streams, config.eval.seq_len)

  num_steps, batch_size, seq_len = config.train.num_steps, config.data.batch_size, config.data.seq_len
  ckpts = checkpoint.Checkpoints(workdir)
  state = steps.init_state(model_config, setup.optimizer, batch_size, config.seed)
  meta = {'best_val_loss': math.inf, 'best_step': None, 'last_val_loss': None,
          'last_val_step': None,
          'wall_time': 0.0, 'train_time': 0.0, 'timed_chars': 0}
  restored = ckpts.restore('latest', state)  # before any write: a damaged one changes nothing
  if restored is not None:
    state, meta = restored
  meta.setdefault('lr_scale', 1.0)  # lowered by each rollback after a NaN/Inf
  meta.setdefault('rollbacks', 0)
  rundir.write_config(workdir, setup.config_dict)
  rundir.write_atomic(workdir / data.VOCAB_FILENAME, corpus.vocab.to_json())
  # Committed to the device like a restored state, so a fresh and a resumed run compile alike.
  state = jax.device_put(state, jax.devices()[0])
  start = int(state.step)
  # Steps after the checkpoint were logged by a process that died: drop them.
  writer = metrics_writer.MetricsWriter(workdir, purge_step=start + 1 if start else None)
  rundir.drop_samples_after(workdir, start)
  num_params = model_lib.count_params(state.params)
  print(f'seqlab: {model_config.num_layers}x{model_config.hidden_size} {model_config.cell}, '
        f'{num_params:,} params, vocab {corpus.vocab.size}, train/val/test '
        f'{len(corpus.train):,}/{len(corpus.val):,}/{len(corpus.test):,} chars, '
        f'{setup.batches.batches_per_epoch} steps/epoch, {jax.devices()[0].platform}; '
        + (f'resuming at step {start}' if start else f'run dir {workdir}'), flush=True)

  sample_steps = set(config.log.sample_steps)
  process_start = time.perf_counter()
  wall_time_before = meta['wall_time']  # of earlier processes of this run
  pending = PendingMetrics(chars_per_step=batch_size * seq_len)
  val = None

  def save(which: str, step: int) -> None:
    if not bool(all_finite(state.params)):
      raise NonFiniteLossError(f'parameters became NaN/Inf by step {step}; not saved')
    meta['wall_time'] = wall_time_before + time.perf_counter() - process_start
    ckpts.save(which, step, state, meta)

  def log_train_metrics(done: int) -> None:
    host, timed_chars, seconds = pending.pull()
    meta['train_time'] += seconds
    meta['timed_chars'] += timed_chars
    chars_per_sec = timed_chars / seconds if seconds else 0.0
    for i, m in enumerate(host):
      if not (np.isfinite(m['loss']) and np.isfinite(m['grad_norm'])):
        raise NonFiniteLossError(
            f'loss {m["loss"]} / grad norm {m["grad_norm"]} at step {done - len(host) + i + 1}')
    loss = float(np.mean([m['loss'] for m in host]))
    writer.scalars(done, {'train/loss': loss, 'train/bpc': evaluate_lib.bits(loss),
                          'lr': float(host[-1]['lr']), 'grad_norm': float(host[-1]['grad_norm'])})
    if chars_per_sec:
      writer.scalars(done, {'chars_per_sec': chars_per_sec})
    if done % config.log.every_steps == 0 or done == num_steps:
      eta = (time.perf_counter() - process_start) / (done - start) * (num_steps - done)
      print(f'step {done}/{num_steps} | loss {loss:.4f} | {chars_per_sec / 1e3:.1f}k chars/s | '
            f'ETA {_duration(eta)}', flush=True)

  def roll_back_or_stop(error: NonFiniteLossError) -> int:
    """After a NaN/Inf: restores the last good checkpoint and lowers the learning rate
    (train.on_nonfinite='rollback'), or stops; returns the step to continue from."""
    nonlocal state, writer
    ckpts.wait()
    last_good = ckpts.latest_step('latest')
    kept = f'the last good checkpoint (step {last_good}) is kept' if last_good is not None \
        else 'no checkpoint was written yet'
    if config.train.on_nonfinite != 'rollback':
      raise NonFiniteLossError(f'{error}; stopped. {kept[0].upper()}{kept[1:]}; lower '
                               'optim.learning_rate or optim.grad_clip, or set '
                               'train.on_nonfinite=rollback, and re-run') from None
    if meta['rollbacks'] >= config.train.max_rollbacks:
      raise NonFiniteLossError(f'{error} after {meta["rollbacks"]} rollbacks '
                               f'(train.max_rollbacks); stopped, {kept}') from None
    restored = ckpts.restore('latest', state)
    state = jax.device_put(restored[0] if restored else steps.init_state(
        model_config, setup.optimizer, batch_size, config.seed), jax.devices()[0])
    back_to = int(state.step)
    meta['rollbacks'] += 1
    meta['lr_scale'] *= config.train.rollback_lr_factor
    # The steps after `back_to` are trained again: drop what was logged for them.
    writer.close()
    writer = metrics_writer.MetricsWriter(workdir, purge_step=back_to + 1)
    rundir.drop_samples_after(workdir, back_to)
    pending.pause()
    print(f'{error}; rolled back to step {back_to}, learning rate x{meta["lr_scale"]:g} '
          f'(rollback {meta["rollbacks"]} of {config.train.max_rollbacks})', flush=True)
    return back_to

  try:
    if stop_at_step is not None and start >= stop_at_step:
      print(f'already at step {start} >= {stop_at_step}; nothing to do', flush=True)
      return None
    step = start
    while step < num_steps:
      inputs, targets, reset = setup.batches.batch(step)
      state, metrics = train_step(state, inputs, targets, reset, np.float32(meta['lr_scale']))
      pending.add(metrics)
      step = done = step + 1
      stopping = done == stop_at_step or stop_request.signum is not None
      is_eval = done % config.eval.every_steps == 0 or done == num_steps
      is_ckpt = done % config.log.checkpoint_every_steps == 0 or done == num_steps or stopping
      is_sample = done in sample_steps or done % config.log.sample_every_steps == 0
      try:  # a NaN/Inf surfaces here: in the pulled metrics, or in the params to be saved
        if is_eval or is_ckpt or is_sample or done % config.log.every_steps == 0:
          log_train_metrics(done)
        if is_eval or is_ckpt or is_sample:
          pending.pause()  # what follows is not training time
        if is_eval:
          val = evaluate(state.params, corpus.val)
          writer.scalars(done, {'val/loss': val['loss'], 'val/bpc': val['bpc']})
          meta['last_val_loss'], meta['last_val_step'] = val['loss'], done
          print(f'step {done}/{num_steps} | val loss {val["loss"]:.4f} | '
                f'val bpc {val["bpc"]:.4f}', flush=True)
          if val['loss'] < meta['best_val_loss']:
            meta['best_val_loss'], meta['best_step'] = val['loss'], done
            save('best', done)
        if is_ckpt:
          save('latest', done)
      except NonFiniteLossError as error:
        step = roll_back_or_stop(error)
        continue
      if is_sample:
        ids = sample(state.params, prime_ids, 1, jax.random.fold_in(
            jax.random.PRNGKey(config.seed), done), config.log.sample_temperature).ids
        text = corpus.vocab.decode(prime_ids) + corpus.vocab.decode(ids[0])
        writer.text('samples', text, done)
        rundir.append_sample(workdir, done, meta['last_val_loss'], meta.get('last_val_step'), text)
        print(f'sample at step {done}:\n  ' + text.strip()[:240].replace('\n', '\n  '), flush=True)
      if stopping:
        ckpts.wait()
        if stop_request.signum is not None:
          raise interrupts.Interrupted(stop_request.signum, done)
        print(f'stopped after step {done}; re-run the same command to continue', flush=True)
        return None
    ckpts.wait()
    if val is None:  # the run was already complete: evaluate the final state again
      val = evaluate(state.params, corpus.val)
    results = {
        'val_loss': val['loss'], 'val_bpc': val['bpc'],
        'best_val_loss': meta['best_val_loss'], 'best_step': meta['best_step'],
        'steps': num_steps, 'chars_seen': num_steps * batch_size * seq_len,
        'chars_per_sec': meta['timed_chars'] / meta['train_time'] if meta['train_time'] else None,
        'num_params': num_params,
        'wall_time': wall_time_before + time.perf_counter() - process_start,
    }
    best = ckpts.restore('best', state)
    best_params = best[0].params if best else state.params
    if len(corpus.test) >= 2:
      test = evaluate(best_params, corpus.test)
      results.update(test_loss=test['loss'], test_bpc=test['bpc'])
    if config.log.novelty_num_samples:
      samples = sample(best_params, prime_ids, config.log.novelty_num_samples,
                       jax.random.PRNGKey(config.seed), config.log.sample_temperature).ids
      results['copied_ngram_fraction'] = novelty.TrainingNgrams(corpus.train).report(
          np.asarray(samples))
    final = {f'final/{k}': v for k, v in results.items()
             if k in ('val_loss', 'val_bpc', 'best_val_loss', 'test_loss', 'test_bpc',
                      'chars_per_sec', 'num_params') and v is not None}
    writer.hparams(metrics_writer.flatten_config(setup.config_dict), final, num_steps)
    rundir.write_results(workdir, results)
  finally:
    ckpts.wait()
    ckpts.close()
    writer.close()

  print(f'done: val loss {results["val_loss"]:.4f} nats/char = {results["val_bpc"]:.4f} bits/char'
        + (f', test loss {results["test_loss"]:.4f} nats/char ({results["test_bpc"]:.4f} bpc)'
           if 'test_loss' in results else '')
        + ('\nsampled n-grams found verbatim in the train split: ' + ', '.join(
            f'{n}-grams {f:.1%}' for n, f in results['copied_ngram_fraction'].items()
            if f is not None) if 'copied_ngram_fraction' in results else '')
        + f'\nrun dir: {workdir}\nTensorBoard: tensorboard --logdir {workdir}', flush=True)
  return results
