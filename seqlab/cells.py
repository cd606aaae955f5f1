"""Recurrent cells, split into the recurrent matmul and an elementwise update.

A step is `hh = h @ W_hh + b_hh` (the only matmul) followed by
`carry = update(carry, x̂, hh)` (elementwise). The input projection
`x̂ = x W_ih + b` of every time step is computed before the scan in one large
matmul (see `model.RecurrentLayer`). The split lets `seqlab.recurrence` write
the backward pass with one matmul per step and the weight gradient as one
large matmul after the scan. Gates are fused: column blocks in `GATES` order.

Equations (⊙ elementwise):
  rnn:  h' = tanh(x̂ + h W_hh)                         (the post's RNN)
  gru:  r = σ(x̂_r + h W_hr), z = σ(x̂_z + h W_hz)
        n = tanh(x̂_n + r ⊙ (h W_hn + b_hn))
        h' = (1 - z) ⊙ n + z ⊙ h                       (as cuDNN / PyTorch)
  lstm: i, f, g, o = σ(·), σ(·), tanh(·), σ(·) of x̂ + h W_hh
        c' = f ⊙ c + i ⊙ g,  h' = o ⊙ tanh(c')
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp

GATES = {'rnn': 1, 'gru': 3, 'lstm': 4}
Carry = Any  # h for rnn/gru, (c, h) for lstm


def init_carry(cell: str, batch_size: int, hidden_size: int, dtype=jnp.float32) -> Carry:
  zeros = lambda: jnp.zeros((batch_size, hidden_size), dtype)
  return (zeros(), zeros()) if cell == 'lstm' else zeros()  # distinct buffers (donation)


def output(cell: str, carry: Carry) -> jax.Array:
  """The hidden state h of a carry."""
  return carry[1] if cell == 'lstm' else carry


def with_output(cell: str, carry: Carry, h: jax.Array) -> Carry:
  """`carry` with its hidden state replaced by `h`."""
  return (carry[0], h) if cell == 'lstm' else h


def recurrent_bias(cell: str, params) -> jax.Array | None:
  """b_hh of `hh = h @ W_hh + b_hh`: GRU's b_hn on the n block; None for the others."""
  if cell != 'gru':
    return None
  hidden = params['bias_hn'].shape[0]
  return jnp.concatenate([jnp.zeros((2 * hidden,), params['bias_hn'].dtype), params['bias_hn']])


def rnn_update(h, xp, hh):
  del h
  return jnp.tanh(xp + hh)


def gru_update(h, xp, hh):
  hidden = h.shape[-1]
  # One sigmoid over the contiguous r|z block: elementwise ops on slices are slow on XLA:CPU.
  rz = jax.nn.sigmoid(xp[..., :2 * hidden] + hh[..., :2 * hidden])
  r, z = rz[..., :hidden], rz[..., hidden:]
  n = jnp.tanh(xp[..., 2 * hidden:] + r * hh[..., 2 * hidden:])
  return (1.0 - z) * n + z * h


def _lstm_gate_scale(hidden: int, dtype) -> jax.Array:
  """1 on the i, f, o blocks and 2 on g: tanh(g) = 2 sigmoid(2g) - 1."""
  return jnp.concatenate([jnp.ones((2 * hidden,), dtype), jnp.full((hidden,), 2.0, dtype),
                          jnp.ones((hidden,), dtype)])


def lstm_update(carry, xp, hh):
  c, _ = carry
  hidden = c.shape[-1]
  # All four gate nonlinearities as one sigmoid over the whole (contiguous) gate block, using
  # tanh(g) = 2 sigmoid(2g) - 1: about 4x faster per step on XLA:CPU than a sigmoid or tanh
  # per sliced gate, and the same function.
  s = jax.nn.sigmoid((xp + hh) * _lstm_gate_scale(hidden, xp.dtype))
  i, f, g, o = s[..., :hidden], s[..., hidden:2 * hidden], s[..., 2 * hidden:3 * hidden], \
      s[..., 3 * hidden:]
  c = f * c + i * (2.0 * g - 1.0)
  return c, o * jnp.tanh(c)


UPDATES = {'rnn': rnn_update, 'gru': gru_update, 'lstm': lstm_update}


def step(cell: str, params, carry: Carry, xp):
  """One time step `(carry, x̂_t) -> (carry, h_t)`; `params` holds kernel_hh (and bias_hn)."""
  hh = output(cell, carry) @ params['kernel_hh']
  bias = recurrent_bias(cell, params)
  carry = UPDATES[cell](carry, xp, hh if bias is None else hh + bias)
  return carry, output(cell, carry)


STEPS = {cell: functools.partial(step, cell) for cell in GATES}
