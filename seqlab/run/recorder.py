"""`RunRecorder`: everything one run writes into its run directory while it trains.

Checkpoints (latest, best) with their `meta`, TensorBoard scalars and text,
samples.md, config.json, vocab.json and results.json. It computes nothing and
decides nothing: the training loop (`seqlab.loop`) evaluates, samples and
applies the NaN policy (`seqlab.nonfinite`), and hands the recorder what to
write. In a multi-host run every process has a recorder and takes part in
checkpoints, but only process 0 writes files or prints.
"""

import math
import pathlib
import time

import numpy as np

from seqlab import data
from seqlab import evaluate as evaluate_lib
from seqlab import parallel
from seqlab.errors import NonFiniteLossError
from seqlab.models import flops
from seqlab.models import registry
from seqlab.run import checkpoint
from seqlab.run import directory as rundir
from seqlab.run import metrics_writer
from seqlab.sweeps.hparams import FINAL_METRICS
from seqlab.sweeps.record import duration



def fresh_meta() -> dict:
  """The bookkeeping saved with every checkpoint, for a run that starts from step 0."""
  return {'best_val_loss': math.inf, 'best_step': None, 'last_val_loss': None,
          'last_val_step': None, 'wall_time': 0.0, 'train_time': 0.0, 'timed_chars': 0,
          'data_time': 0.0, 'lr_scale': 1.0, 'rollbacks': 0}


class RunRecorder:
  """Writes one run's checkpoints, curves, samples and results.

  `open` comes first, after the latest checkpoint was read (so a damaged one
  changes nothing): it writes config.json and vocab.json and opens TensorBoard,
  dropping events after the step the run resumes from.
  """

  def __init__(self, config, workdir: pathlib.Path, setup, label: str = ''):
    self.config, self.workdir, self.setup = config, pathlib.Path(workdir), setup
    self.label = label  # printed before each line (fused trials share one console)
    self.primary = parallel.is_primary()
    self.ckpts = checkpoint.Checkpoints(self.workdir)
    self.meta = fresh_meta()
    self.writer = None
    self._process_start = time.perf_counter()
    self._wall_time_before = 0.0
    self.flops_per_char = flops.per_char(setup.model_config)['total']  # training FLOPs

  def print(self, text: str) -> None:
    if self.primary:
      print(self.label + text.replace('\n', '\n' + self.label), flush=True)

  def open(self, start: int, meta: dict | None) -> None:
    """Starts writing at step `start`, with the `meta` of the checkpoint resumed from."""
    self.meta = fresh_meta() | (meta or {})  # older checkpoints lack some keys
    if self.primary:
      rundir.write_config(self.workdir, self.setup.config_dict)
      rundir.write_atomic(self.workdir / data.VOCAB_FILENAME, self.setup.corpus.vocab.to_json())
    self.reopen_at(start)
    self._wall_time_before = self.meta['wall_time']  # of earlier processes of this run

  def reopen_at(self, step: int) -> None:
    """TensorBoard and samples.md without what was logged after `step` (by a process that
    died, or before a rollback)."""
    if self.writer is not None:
      self.writer.close()
    if not self.primary:
      self.writer = metrics_writer.NullWriter()
      return
    self.writer = metrics_writer.MetricsWriter(self.workdir, purge_step=step + 1 if step else None)
    rundir.drop_samples_after(self.workdir, step)

  def describe(self, num_params: int, start: int, devices: str) -> None:
    cfg, corpus = self.setup.model_config, self.setup.corpus
    self.print(f'seqlab: {registry.describe(cfg)}, {num_params:,} params, '
               f'vocab {corpus.vocab.size}, train/val/test {len(corpus.train):,}/'
               f'{len(corpus.val):,}/{len(corpus.test):,} chars, '
               f'{self.setup.batches.batches_per_epoch} steps/epoch, {devices}; '
               + (f'resuming at step {start}' if start else f'run dir {self.workdir}'))

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

  def log_val(self, done: int, val: dict) -> bool:
    """Writes a val loss; returns whether it is the lowest so far (a new 'best')."""
    chars_per_step = self.config.data.batch_size * self.config.data.seq_len
    self.writer.scalars(done, {
        'val/loss': val['loss'], 'val/bpc': val['bpc'],  # eval.protocol's
        **{f'val/loss_{p}': val[p]['loss'] for p in evaluate_lib.PROTOCOLS if p in val},
        # the x axes of equal-compute comparisons (seqlab.compare --x time|flops)
        'val/train_seconds': self.meta['train_time'],
        'val/train_flops': float(done * chars_per_step * self.flops_per_char)})
    self.meta['last_val_loss'], self.meta['last_val_step'] = val['loss'], done
    others = ''.join(f' | {p} {val[p]["loss"]:.4f}' for p in evaluate_lib.PROTOCOLS
                     if p in val and p != val['protocol'])
    self.print(f'step {done}/{self.config.train.num_steps} | val loss {val["loss"]:.4f} | '
               f'val bpc {val["bpc"]:.4f} ({val["protocol"]}){others}')
    if val['loss'] < self.meta['best_val_loss']:
      self.meta['best_val_loss'], self.meta['best_step'] = val['loss'], done
      return True
    return False

  def save(self, which: str, step: int, state) -> None:
    """An async checkpoint of `state` (whose parameters the caller checked are finite)."""
    self.meta['wall_time'] = self._wall_time_before + time.perf_counter() - self._process_start
    self.ckpts.save(which, step, state, self.meta)

  def log_sample(self, done: int, text: str) -> None:
    self.writer.text('samples', text, done)
    if self.primary:
      rundir.append_sample(self.workdir, done, self.meta['last_val_loss'],
                           self.meta.get('last_val_step'), text)
    self.print(f'sample at step {done}:\n  ' + text.strip()[:240].replace('\n', '\n  '))

  def results(self, val: dict, num_params: int) -> dict:
    """results.json's fields that the run's bookkeeping knows (the loop adds test and novelty)."""
    config, meta = self.config, self.meta
    num_steps, data_config = config.train.num_steps, config.data
    return {
        'val_loss': val['loss'], 'val_bpc': val['bpc'],
        'best_val_loss': meta['best_val_loss'], 'best_step': meta['best_step'],
        'steps': num_steps,
        'chars_seen': num_steps * data_config.batch_size * data_config.seq_len,
        'chars_per_sec': meta['timed_chars'] / meta['train_time'] if meta['train_time'] else None,
        # Time the loop waited for batches / training time (seqlab.prefetch; fused: assembly).
        'data_time_fraction': meta['data_time'] / meta['train_time'] if meta['train_time']
                              else None,
        'num_params': num_params,
        'eval_protocol': evaluate_lib.setting(config.eval, 'protocol'),
        'eval_window': evaluate_lib.setting(config.eval, 'window'),
        **evaluate_lib.by_protocol('val', val),
        **({'val_loss_by_position': val['windows']['by_position']} if 'windows' in val else {}),
        'train_time': meta['train_time'], 'flops_per_char': self.flops_per_char,
        'wall_time': self._wall_time_before + time.perf_counter() - self._process_start,
    }

  def write_results(self, results: dict) -> None:
    """results.json, the HParams summary and the closing lines."""
    final = {f'final/{k}': v for k, v in results.items()
             if f'final/{k}' in FINAL_METRICS and v is not None}
    self.writer.hparams(metrics_writer.flatten_config(self.setup.config_dict), final,
                        self.config.train.num_steps)
    if self.primary:
      rundir.write_results(self.workdir, results)
    self.print(
        f'done: val loss {results["val_loss"]:.4f} nats/char = {results["val_bpc"]:.4f} '
        f'bits/char ({results["eval_protocol"]})'
        + (f'; over windows of {results["eval_window"]} from the zero state (nanoGPT\'s '
           f'protocol): {results["val_loss_windows"]:.4f}'
           + (f' +- {results["val_loss_windows_stderr"]:.4f}'
              if results.get('val_loss_windows_stderr') is not None else '')
           if 'val_loss_windows' in results and results['eval_protocol'] != 'windows' else '')
        + (f', test loss {results["test_loss"]:.4f} nats/char ({results["test_bpc"]:.4f} bpc)'
           if 'test_loss' in results else '')
        + ('\nsampled n-grams found verbatim in the train split: ' + ', '.join(
            f'{n}-grams {f:.1%}' for n, f in results['copied_ngram_fraction'].items()
            if f is not None) if 'copied_ngram_fraction' in results else '')
        + f'\nrun dir: {self.workdir}\nTensorBoard: tensorboard --logdir {self.workdir}')

  def close(self) -> None:
    """Finishes the checkpoints in flight and closes TensorBoard (also after a failed write)."""
    try:
      self.ckpts.close()
    finally:
      if self.writer is not None:
        self.writer.close()
