"""Deterministic evaluation of a split under two protocols (`eval.protocol`, `eval.window`).

  stream    every prediction with as much past as the model can use: a full pass over the
            split read as `eval.num_streams` contiguous streams, the state carried across
            chunks of `eval.seq_len`. The GPT cannot carry state past its context, so for it
            `stream` means sliding windows of `eval.window` symbols with stride window/2,
            each scoring only its second half (the first window scores all of it): every
            prediction past the first window sees at least half a window of context.
  windows   nanoGPT's kind: non-overlapping windows of `eval.window` symbols from offset 0
            of the split, each read from the zero state, the loss averaged over every
            position of every window (the last window is partial). Reported with its
            standard error over windows and the mean loss at each position of a window.

Both score every prediction of the split exactly once; they differ in the context each
prediction has. A run reports both (`eval.both_protocols`); `eval.protocol` says which one
is its `val_loss` (the best checkpoint, early stopping, sweep summaries).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from seqlab import data
from seqlab.errors import SeqlabError
from seqlab.models import registry


# Chunks dispatched ahead of the device. Unbounded, a split CPU deadlocked: XLA:CPU holds
# an in-flight slot (32 per device) for every dispatched program, and once a device's slots
# were taken by later chunks waiting on their inputs, the chunk they waited for could not
# start, while its other half held the other device in an all-reduce (a zoo:gpt run's
# 109-chunk evaluation hung twice; the char-rnn's 28 chunks never had). The training loop
# bounds its steps the same way (`loop.PendingMetrics`).
MAX_IN_FLIGHT = 8


def bits(nats: float) -> float:
  """nats/char -> bits/char."""
  return nats / math.log(2)


PROTOCOLS = ('stream', 'windows')


# What a run saved before the protocols existed (its config.json lacks them) evaluates.
_BEFORE_PROTOCOLS = {'protocol': 'stream', 'both_protocols': False, 'window': 256}


def setting(eval_config, name: str):
  """eval.protocol, eval.both_protocols or eval.window, also of a config saved before them."""
  return eval_config.get(name, _BEFORE_PROTOCOLS[name])


def check_config(eval_config, model_config) -> None:
  """One error line for an unknown protocol, or a window the model cannot read."""
  protocol, window = setting(eval_config, 'protocol'), setting(eval_config, 'window')
  if protocol not in PROTOCOLS:
    raise SeqlabError(f'unknown eval.protocol {protocol!r}; use one of ' + ', '.join(PROTOCOLS))
  if window < 1:
    raise SeqlabError(f'eval.window must be at least 1, got {window}')
  context = registry.window(model_config)
  if context is not None and 'window' not in eval_config:  # saved before eval.window
    return
  if context is not None and window > context:
    raise SeqlabError(f'eval.window={window} is longer than the model\'s context of {context} '
                      f'tokens; set --config.eval.window={context} or less')
  if context is not None and window < 2:
    raise SeqlabError('eval.window must be at least 2 for a model with a window (the stream '
                      'protocol slides it by half)')


def protocols_of(eval_config) -> tuple[str, ...]:
  """The protocols a run evaluates, its primary one (`val_loss`) first."""
  primary = setting(eval_config, 'protocol')
  both = setting(eval_config, 'both_protocols')
  return (primary, *[p for p in PROTOCOLS if p != primary and both])


def evaluate(eval_step, params, model_config, tokens: np.ndarray, eval_config,
             placement=None) -> dict:
  """The split under every protocol of `protocols_of(eval_config)`.

  Returns the primary protocol's {'loss', 'bpc', 'chars'} with 'protocol' naming it, and
  each protocol's own result under its name (see `evaluate_protocol`).
  """
  results = {p: evaluate_protocol(eval_step, params, model_config, tokens, eval_config, p,
                                  placement) for p in protocols_of(eval_config)}
  protocol = protocols_of(eval_config)[0]
  primary = results[protocol]
  return {'loss': primary['loss'], 'bpc': primary['bpc'], 'chars': primary['chars'],
          'protocol': protocol, **results}


def evaluate_protocol(eval_step, params, model_config, tokens: np.ndarray, eval_config,
                      protocol: str, placement=None) -> dict:
  """Mean loss over every next-symbol prediction of `tokens` under `protocol`.

  `eval_step` is the jitted `steps.make_eval_step(model)`. Sums come back from the device
  once, at the end, and are added up in float64 on the host. With a `parallel.Placement`,
  the rows (streams or windows) are split over its devices when they divide evenly (each
  process passes the same chunks).
  Returns {'loss': nats/char, 'bpc': bits/char, 'chars': predictions counted}; `windows`
  adds 'stderr' (of the loss, over windows; None for a single window) and 'by_position'
  (mean loss at each position of a window, a list of eval.window floats).
  """
  windowed_model = registry.window(model_config) is not None
  batch, window = eval_config.num_streams, setting(eval_config, 'window')
  if windowed_model:  # a GPT run saved before eval.window: its context
    window = min(window, registry.window(model_config))
  if protocol == 'windows':
    chunks, from_zero = data.window_chunks(tokens, window, batch), True
  elif windowed_model:  # the GPT's stream: sliding windows, each scoring its second half
    chunks, from_zero = data.window_chunks(tokens, window, batch, stride=window // 2), True
  else:
    chunks, from_zero = data.eval_chunks(tokens, batch, eval_config.seq_len), False
  per_chunk = _run_chunks(eval_step, params, model_config, chunks, from_zero, placement)
  sums = {key: np.sum([np.asarray(c[key], np.float64) for c in per_chunk], axis=0)
          for key in per_chunk[0]}
  loss = float(sums['nll'] / sums['count'])
  result = {'loss': loss, 'bpc': bits(loss), 'chars': int(sums['count'])}
  if protocol == 'windows':
    result['stderr'] = _ratio_stderr(per_chunk, loss, len(tokens) - 1, window)
    result['by_position'] = [float(nll / count) if count else None  # None: a split < window
                             for nll, count in zip(sums['nll_T'], sums['count_T'])]
  return result


def by_protocol(split: str, result: dict) -> dict:
  """`evaluate`'s result as flat, named fields: {split}_loss_stream, {split}_loss_windows,
  {split}_loss_windows_stderr (those it has)."""
  fields = {}
  for protocol in PROTOCOLS:
    if protocol in result:
      fields[f'{split}_loss_{protocol}'] = result[protocol]['loss']
      if 'stderr' in result[protocol]:
        fields[f'{split}_loss_{protocol}_stderr'] = result[protocol]['stderr']
  return fields


def _ratio_stderr(chunks: list[dict], loss: float, n: int, window: int) -> float | None:
  """Standard error of loss = sum(s_i) / sum(c_i) over k windows (s_i, c_i: a window's NLL
  sum and count), the ratio estimator's: sqrt(sum((s_i - loss c_i)^2) / (k (k - 1))) / mean(c).
  With equal counts this is the standard deviation of the windows' mean losses / sqrt(k).
  Each chunk's sums are centred on its own mean m: s - loss c = (s - m c) + (m - loss) c."""
  k = -(-n // window)
  if k < 2:
    return None
  squares = 0.0
  for chunk in chunks:
    if chunk['count'] > 0:
      shift = float(chunk['nll']) / float(chunk['count']) - loss
      squares += (float(chunk['dev_sq']) + 2 * shift * float(chunk['dev_count'])
                  + shift * shift * float(chunk['count_sq']))
  total_count = sum(float(chunk['count']) for chunk in chunks)
  return math.sqrt(max(squares, 0.0) / (k * (k - 1))) / (total_count / k)


def _run_chunks(eval_step, params, model_config, chunks, from_zero: bool,
                placement) -> list[dict]:
  """Runs `eval_step` over `chunks`, the state carried from chunk to chunk or, `from_zero`,
  reset to the zero state before each; returns each chunk's sums, on the host."""
  carry, zero_after, sums = None, None, []
  for chunk in chunks:
    if from_zero and carry is not None:
      # The zero state, computed from the last chunk's: chunks still run one after the other.
      # (Independent steps would run concurrently, and concurrent collectives can deadlock
      # a CPU split into devices.)
      carry = zero_after(carry)
    if carry is None:  # placed once, so every chunk calls eval_step alike
      carry = registry.init_carry(model_config, chunk[0].shape[0])
      if placement is None:
        place = lambda tree: jax.device_put(tree, jax.tree.leaves(params)[0].sharding)
      else:
        sharding = placement.eval_sharding(chunk[0].shape[0])
        place = lambda tree: placement.put(tree, jax.tree.map(lambda _: sharding, tree))
      carry = place(carry)
      zero_after = jax.jit(lambda tree: jax.tree.map(jnp.zeros_like, tree),
                           out_shardings=jax.tree.map(lambda x: x.sharding, carry))
    carry, chunk_sums = eval_step(params, carry, *place(chunk))
    sums.append(chunk_sums)
    if len(sums) > MAX_IN_FLIGHT:  # the chunk dispatched MAX_IN_FLIGHT ago has finished
      jax.block_until_ready(sums[-MAX_IN_FLIGHT - 1])
  return jax.device_get(sums)
