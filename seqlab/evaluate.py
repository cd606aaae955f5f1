"""Deterministic evaluation: a full pass over a split with carried state."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from seqlab import data
from seqlab.models import registry


# Chunks dispatched ahead of the device. Unbounded, a split CPU deadlocked: XLA:CPU holds
# an in-flight slot (32 per device) for every dispatched program, and once a device's slots
# were taken by later chunks waiting on their inputs, the chunk they waited for could not
# start, while its other half held the other device in an all-reduce (a zoo:gpt run's
# 109-chunk evaluation hung twice; the char-rnn's 28 chunks never had).
MAX_IN_FLIGHT = 8


def bits(nats: float) -> float:
  """nats/char -> bits/char."""
  return nats / math.log(2)


def evaluate(eval_step, params, model_config, tokens: np.ndarray,
             num_streams: int, seq_len: int, placement=None) -> dict[str, float]:
  """Mean loss over every next-symbol prediction of `tokens`.

  `eval_step` is the jitted `steps.make_eval_step(model)`. Sums come back from
  the device once, at the end, and are added up in float64 on the host.
  With a `parallel.Placement`, the streams are split over its devices when
  they divide evenly (each process passes the same chunks).
  A model with a window (the GPT) reads every chunk from its zero state instead: the
  split in non-overlapping windows of `seq_len` (at most its context) symbols.
  Returns {'loss': nats/char, 'bpc': bits/char, 'chars': predictions counted}.
  """
  windowed = registry.window(model_config) is not None
  carry, zero_after, sums = None, None, []
  for chunk in data.eval_chunks(tokens, num_streams, seq_len):
    if windowed and carry is not None:
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
    carry, nll_sum, count = eval_step(params, carry, *place(chunk))
    sums.append((nll_sum, count))
    if len(sums) > MAX_IN_FLIGHT:  # the chunk dispatched MAX_IN_FLIGHT ago has finished
      jax.block_until_ready(sums[-MAX_IN_FLIGHT - 1])
  sums = jax.device_get(sums)
  total = sum(float(s) for s, _ in sums)
  count = sum(float(c) for _, c in sums)
  loss = total / count
  return {'loss': loss, 'bpc': bits(loss), 'chars': int(count)}
