"""Deterministic evaluation: a full pass over a split with carried state."""

import math

import jax
import numpy as np

from seqlab import data
from seqlab import model as model_lib


def bits(nats: float) -> float:
  """nats/char -> bits/char."""
  return nats / math.log(2)


def evaluate(eval_step, params, model_config: model_lib.ModelConfig, tokens: np.ndarray,
             num_streams: int, seq_len: int) -> dict[str, float]:
  """Mean loss over every next-symbol prediction of `tokens`.

  `eval_step` is the jitted `steps.make_eval_step(model)`. Sums come back from
  the device once, at the end, and are added up in float64 on the host.
  Returns {'loss': nats/char, 'bpc': bits/char, 'chars': predictions counted}.
  """
  carry, sums = None, []
  for inputs, targets, mask in data.eval_chunks(tokens, num_streams, seq_len):
    if carry is None:  # placed like the params, so every chunk calls eval_step alike
      carry = jax.device_put(model_lib.init_carry(model_config, inputs.shape[0]),
                             jax.tree.leaves(params)[0].sharding)
    carry, nll_sum, count = eval_step(params, carry, inputs, targets, mask)
    sums.append((nll_sum, count))
  sums = jax.device_get(sums)
  total = sum(float(s) for s, _ in sums)
  count = sum(float(c) for _, c in sums)
  loss = total / count
  return {'loss': loss, 'bpc': bits(loss), 'chars': int(count)}
