"""`RunRecorder`: everything one run writes into its run directory while it trains.

Checkpoints (latest, best) with their `meta`, TensorBoard scalars, samples.md,
results.json, and the checks that keep NaN parameters out of checkpoints. The
training loop (`seqlab.train`, or `seqlab.fused` for several trials in one
compiled step) decides when; the recorder does the writing, for one run.
In a multi-host run every process has a recorder and takes part in checkpoints
and evaluation, but only process 0 writes files or prints.
"""

import math
import pathlib
import time

import jax
import numpy as np

from seqlab.run import checkpoint
from seqlab import data
from seqlab import evaluate as evaluate_lib
from seqlab.run import metrics_writer
from seqlab.models import char_rnn as model_lib
from seqlab.analysis import novelty
from seqlab import parallel
from seqlab.run import directory as rundir
from seqlab import generate as sampling
from seqlab import steps
from seqlab.errors import NonFiniteLossError, SeqlabError

_FINAL_METRICS = ('val_loss', 'val_bpc', 'best_val_loss', 'test_loss', 'test_bpc',
                  'chars_per_sec', 'num_params')


def _prime_ids(vocab: data.Vocabulary, prime: str) -> np.ndarray:
  """The ids of the text that training samples start from; the first symbol if it is unusable."""
  try:
    return vocab.encode(prime) if prime else np.zeros(1, np.int32)
  except SeqlabError:  # e.g. the default '\n' in a text without newlines
    return np.zeros(1, np.int32)


def duration(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds // 60 % 60:02d}m' if seconds >= 3600 else \
      f'{seconds // 60}m{seconds % 60:02d}s'


class RunRecorder:
  """Writes one run's checkpoints, curves, samples and results.

  `restore` must come first: it reads the latest checkpoint (before anything is
  written, so a damaged one changes nothing), then writes config.json and
  vocab.json and opens TensorBoard, purging events after the restored step.
  """

  def __init__(self, config, workdir: pathlib.Path, setup, model, eval_step, all_finite,
               sample_fn, label: str = '', placement: parallel.Placement | None = None):
    self.config, self.workdir, self.setup = config, pathlib.Path(workdir), setup
    self.model, self._eval_step, self._all_finite, self._sample = model, eval_step, all_finite, \
        sample_fn
    self.label = label  # printed before each line (fused trials share one console)
    self.placement = placement  # None: one device (fused trials)
    self.primary = parallel.is_primary()
    self.ckpts = checkpoint.Checkpoints(self.workdir)
    self.meta = {'best_val_loss': math.inf, 'best_step': None, 'last_val_loss': None,
                 'last_val_step': None, 'wall_time': 0.0, 'train_time': 0.0, 'timed_chars': 0,
                 'data_time': 0.0}
    self.writer = None
    self.prime_ids = _prime_ids(setup.corpus.vocab, config.log.sample_prime)
    self._process_start = time.perf_counter()
    self._wall_time_before = 0.0

  def print(self, text: str) -> None:
    if self.primary:
      print(self.label + text.replace('\n', '\n' + self.label), flush=True)

  # --- starting and rolling back.
  def restore(self, fresh_state):
    """The latest checkpoint's state (or `fresh_state`), with the run directory opened."""
    restored = self.ckpts.restore('latest', fresh_state)
    state = fresh_state
    if restored is not None:
      state, self.meta = restored
    self.meta.setdefault('lr_scale', 1.0)  # lowered by each rollback after a NaN/Inf
    self.meta.setdefault('rollbacks', 0)
    self.meta.setdefault('data_time', 0.0)  # checkpoints of older versions lack it
    if self.primary:
      rundir.write_config(self.workdir, self.setup.config_dict)
      rundir.write_atomic(self.workdir / data.VOCAB_FILENAME, self.setup.corpus.vocab.to_json())
    start = int(state.step)
    self._open_writer(start)
    self._wall_time_before = self.meta['wall_time']  # of earlier processes of this run
    return state

  def _open_writer(self, step: int) -> None:
    """TensorBoard, dropping what was logged after `step` (by a process that died, or
    before a rollback), and the same for samples.md."""
    if self.writer is not None:
      self.writer.close()
    if not self.primary:
      self.writer = metrics_writer.NullWriter()
      return
    self.writer = metrics_writer.MetricsWriter(self.workdir, purge_step=step + 1 if step else None)
    rundir.drop_samples_after(self.workdir, step)

  def describe(self, state, start: int) -> None:
    cfg, corpus = self.setup.model_config, self.setup.corpus
    self.print(f'seqlab: {cfg.num_layers}x{cfg.hidden_size} {cfg.cell}, '
               f'{model_lib.count_params(state.params):,} params, vocab {corpus.vocab.size}, '
               f'train/val/test {len(corpus.train):,}/{len(corpus.val):,}/{len(corpus.test):,} '
               f'chars, {self.setup.batches.batches_per_epoch} steps/epoch, '
               f'{self.placement.describe() if self.placement else jax.devices()[0].platform}; '
               + (f'resuming at step {start}' if start else f'run dir {self.workdir}'))

  def nonfinite(self, error: NonFiniteLossError, fresh_state, can_roll_back: bool = True):
    """After a NaN/Inf: the last good state with a lowered learning rate
    (train.on_nonfinite='rollback'), or raises NonFiniteLossError to stop."""
    self.ckpts.wait()
    last_good = self.ckpts.latest_step('latest')
    kept = f'the last good checkpoint (step {last_good}) is kept' if last_good is not None \
        else 'no checkpoint was written yet'
    train_config = self.config.train
    if train_config.on_nonfinite != 'rollback' or not can_roll_back:
      raise NonFiniteLossError(f'{error}; stopped. {kept[0].upper()}{kept[1:]}; lower '
                               'optim.learning_rate or optim.grad_clip, or set '
                               'train.on_nonfinite=rollback, and re-run') from None
    if self.meta['rollbacks'] >= train_config.max_rollbacks:
      raise NonFiniteLossError(f'{error} after {self.meta["rollbacks"]} rollbacks '
                               f'(train.max_rollbacks); stopped, {kept}') from None
    restored = self.ckpts.restore('latest', fresh_state)
    state = restored[0] if restored else fresh_state
    back_to = int(state.step)
    self.meta['rollbacks'] += 1
    self.meta['lr_scale'] *= train_config.rollback_lr_factor
    self._open_writer(back_to)  # the steps after back_to are trained again
    self.print(f'{error}; rolled back to step {back_to}, learning rate '
               f'x{self.meta["lr_scale"]:g} (rollback {self.meta["rollbacks"]} of '
               f'{train_config.max_rollbacks})')
    return state

  # --- while training.
  def log_train(self, done: int, host_metrics: list[dict], timed_chars: int, seconds: float,
                data_seconds: float, start: int) -> None:
    """Scalars for the steps since the last pull; raises NonFiniteLossError on a NaN/Inf."""
    self.meta['train_time'] += seconds
    self.meta['timed_chars'] += timed_chars
    self.meta['data_time'] += data_seconds
    chars_per_sec = timed_chars / seconds if seconds else 0.0
    for i, m in enumerate(host_metrics):
      if not (np.isfinite(m['loss']) and np.isfinite(m['grad_norm'])):
        raise NonFiniteLossError(f'loss {m["loss"]} / grad norm {m["grad_norm"]} at step '
                                 f'{done - len(host_metrics) + i + 1}')
    loss = float(np.mean([m['loss'] for m in host_metrics]))
    self.writer.scalars(done, {'train/loss': loss, 'train/bpc': evaluate_lib.bits(loss),
                               'lr': float(host_metrics[-1]['lr']),
                               'grad_norm': float(host_metrics[-1]['grad_norm'])})
    if chars_per_sec:
      self.writer.scalars(done, {'chars_per_sec': chars_per_sec,
                                 'data_time_fraction': data_seconds / seconds})
    num_steps = self.config.train.num_steps
    if done % self.config.log.every_steps == 0 or done == num_steps:
      eta = (time.perf_counter() - self._process_start) / (done - start) * (num_steps - done)
      self.print(f'step {done}/{num_steps} | loss {loss:.4f} | {chars_per_sec / 1e3:.1f}k '
                 f'chars/s | ETA {duration(eta)}')

  def evaluate(self, params, tokens) -> dict:
    return evaluate_lib.evaluate(self._eval_step, params, self.setup.model_config, tokens,
                                 self.config.eval.num_streams, self.config.eval.seq_len,
                                 self.placement)

  def validate(self, done: int, state) -> dict:
    """The val loss now; a 'best' checkpoint if it is the lowest so far."""
    val = self.evaluate(state.params, self.setup.corpus.val)
    self.writer.scalars(done, {'val/loss': val['loss'], 'val/bpc': val['bpc']})
    self.meta['last_val_loss'], self.meta['last_val_step'] = val['loss'], done
    self.print(f'step {done}/{self.config.train.num_steps} | val loss {val["loss"]:.4f} | '
               f'val bpc {val["bpc"]:.4f}')
    if val['loss'] < self.meta['best_val_loss']:
      self.meta['best_val_loss'], self.meta['best_step'] = val['loss'], done
      self.save('best', done, state)
    return val

  def save(self, which: str, step: int, state) -> None:
    """An async checkpoint; raises NonFiniteLossError instead of saving NaN/Inf parameters."""
    if not bool(self._all_finite(state.params)):
      raise NonFiniteLossError(f'parameters became NaN/Inf by step {step}; not saved')
    self.meta['wall_time'] = self._wall_time_before + time.perf_counter() - self._process_start
    self.ckpts.save(which, step, state, self.meta)

  def sample(self, done: int, params) -> None:
    log = self.config.log
    ids = self._sample(params, self.prime_ids, 1, jax.random.fold_in(
        jax.random.PRNGKey(self.config.seed), done), log.sample_temperature).ids
    vocab = self.setup.corpus.vocab
    text = vocab.decode(self.prime_ids) + vocab.decode(ids[0])
    self.writer.text('samples', text, done)
    if self.primary:
      rundir.append_sample(self.workdir, done, self.meta['last_val_loss'],
                           self.meta.get('last_val_step'), text)
    self.print(f'sample at step {done}:\n  ' + text.strip()[:240].replace('\n', '\n  '))

  # --- at the end.
  def finish(self, state, val: dict | None) -> dict:
    """Test loss (best checkpoint), novelty, hparams and results.json; returns the results."""
    self.ckpts.wait()
    config, corpus = self.config, self.setup.corpus
    if val is None:  # the run was already complete: evaluate the final state again
      val = self.evaluate(state.params, corpus.val)
    num_steps, data_config = config.train.num_steps, config.data
    meta = self.meta
    results = {
        'val_loss': val['loss'], 'val_bpc': val['bpc'],
        'best_val_loss': meta['best_val_loss'], 'best_step': meta['best_step'],
        'steps': num_steps,
        'chars_seen': num_steps * data_config.batch_size * data_config.seq_len,
        'chars_per_sec': meta['timed_chars'] / meta['train_time'] if meta['train_time'] else None,
        # Time the loop waited for batches / training time (seqlab.prefetch; fused: assembly).
        'data_time_fraction': meta['data_time'] / meta['train_time'] if meta['train_time']
                              else None,
        'num_params': model_lib.count_params(state.params),
        'wall_time': self._wall_time_before + time.perf_counter() - self._process_start,
    }
    best = self.ckpts.restore('best', state)
    best_params = best[0].params if best else state.params
    if len(corpus.test) >= 2:
      test = self.evaluate(best_params, corpus.test)
      results.update(test_loss=test['loss'], test_bpc=test['bpc'])
    if config.log.novelty_num_samples:
      samples = self._sample(best_params, self.prime_ids, config.log.novelty_num_samples,
                             jax.random.PRNGKey(config.seed), config.log.sample_temperature).ids
      results['copied_ngram_fraction'] = novelty.TrainingNgrams(corpus.train).report(
          np.asarray(samples))
    final = {f'final/{k}': v for k, v in results.items()
             if k in _FINAL_METRICS and v is not None}
    self.writer.hparams(metrics_writer.flatten_config(self.setup.config_dict), final, num_steps)
    if self.primary:
      rundir.write_results(self.workdir, results)
    self.print(
        f'done: val loss {results["val_loss"]:.4f} nats/char = {results["val_bpc"]:.4f} '
        'bits/char'
        + (f', test loss {results["test_loss"]:.4f} nats/char ({results["test_bpc"]:.4f} bpc)'
           if 'test_loss' in results else '')
        + ('\nsampled n-grams found verbatim in the train split: ' + ', '.join(
            f'{n}-grams {f:.1%}' for n, f in results['copied_ngram_fraction'].items()
            if f is not None) if 'copied_ngram_fraction' in results else '')
        + f'\nrun dir: {self.workdir}\nTensorBoard: tensorboard --logdir {self.workdir}')
    return results

  def close(self) -> None:
    """Finishes the checkpoints in flight and closes TensorBoard (also after a failed write)."""
    try:
      self.ckpts.close()
    finally:
      if self.writer is not None:
        self.writer.close()


def make_tools(model, sample_length: int):
  """The jitted functions every recorder of one model shares: eval step, finiteness, sampler."""
  return (jax.jit(steps.make_eval_step(model)), jax.jit(steps.all_finite),
          sampling.make_sampler(model, sample_length))
