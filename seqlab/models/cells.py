"""Recurrent cells, split into the recurrent matmul and an elementwise update.

A step is `hh = h @ W_hh + b_hh` (the only matmul) followed by
`carry = update(cell, carry, x̂, hh)` (elementwise). The input projection
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


# Each cell: `forward(carry, xp, hh) -> (carry, saved)` and the hand-derived
# `backward(carry_prev, carry, saved, dcarry) -> (dcarry_prev, dxp, dhh)`, where
# dcarry_prev excludes the path through `hh` (seqlab.recurrence adds dhh @ W_hh^T; its h
# part is None where h_prev has no other path).
# Nonlinearities run over whole contiguous gate blocks: on XLA:CPU an elementwise op
# on a slice of the gate block is several times slower than on the block itself.


def rnn_forward(h, xp, hh):
  del h
  h = jnp.tanh(xp + hh)
  return h, ()


def rnn_backward(h_prev, h, saved, dh):
  del saved
  dpre = dh * (1.0 - h * h)
  return None, dpre, dpre  # h_prev reaches h only through hh


def gru_forward(h, xp, hh):
  hidden = h.shape[-1]
  rz = jax.nn.sigmoid(xp[..., :2 * hidden] + hh[..., :2 * hidden])
  r, z = rz[..., :hidden], rz[..., hidden:]
  hn = hh[..., 2 * hidden:]  # h W_hn + b_hn
  n = jnp.tanh(xp[..., 2 * hidden:] + r * hn)
  return (1.0 - z) * n + z * h, (rz, n, hn)


def gru_backward(h_prev, h, saved, dh):
  del h
  rz, n, hn = saved
  hidden = n.shape[-1]
  r, z = rz[..., :hidden], rz[..., hidden:]
  drz_dpre = rz * (1.0 - rz)  # whole block first: faster
  dn_pre = dh * (1.0 - z) * (1.0 - n * n)
  drz = jnp.concatenate([dn_pre * hn, dh * (h_prev - n)], axis=-1) * drz_dpre
  dxp = jnp.concatenate([drz, dn_pre], axis=-1)
  dhh = jnp.concatenate([drz, dn_pre * r], axis=-1)
  return dh * z, dxp, dhh


def _lstm_gate_scale(hidden: int, dtype) -> jax.Array:
  """1 on the i, f, o blocks and 2 on g: tanh(g) = 2 sigmoid(2g) - 1."""
  return jnp.concatenate([jnp.ones((2 * hidden,), dtype), jnp.full((hidden,), 2.0, dtype),
                          jnp.ones((hidden,), dtype)])


def _lstm_gates(s, hidden):
  return s[..., :hidden], s[..., hidden:2 * hidden], s[..., 2 * hidden:3 * hidden], \
      s[..., 3 * hidden:]


def lstm_forward(carry, xp, hh):
  c, _ = carry
  hidden = c.shape[-1]
  # All four gate nonlinearities as one sigmoid over the gate block, with
  # tanh(g) = 2 sigmoid(2g) - 1: the same function, ~4x faster per step on CPU.
  s = jax.nn.sigmoid((xp + hh) * _lstm_gate_scale(hidden, xp.dtype))
  i, f, g, o = _lstm_gates(s, hidden)
  c = f * c + i * (2.0 * g - 1.0)
  return (c, o * jnp.tanh(c)), s


def lstm_backward(carry_prev, carry, s, dcarry):
  c_prev, c = carry_prev[0], carry[0]
  dc, dh = dcarry
  hidden = c.shape[-1]
  dsigmoid = s * (1.0 - s) * _lstm_gate_scale(hidden, s.dtype)  # whole block first: faster
  i, f, g, o = _lstm_gates(s, hidden)
  tanh_c = jnp.tanh(c)
  dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
  ds = jnp.concatenate([dc * (2.0 * g - 1.0), dc * c_prev, 2.0 * dc * i, dh * tanh_c], axis=-1)
  dpre = ds * dsigmoid
  return (dc * f, None), dpre, dpre  # dh_prev: only through hh


FORWARDS = {'rnn': rnn_forward, 'gru': gru_forward, 'lstm': lstm_forward}
BACKWARDS = {'rnn': rnn_backward, 'gru': gru_backward, 'lstm': lstm_backward}


def update(cell: str, carry: Carry, xp, hh) -> Carry:
  """The elementwise part of a step: the new carry from x̂_t and hh = h W_hh + b_hh."""
  return FORWARDS[cell](carry, xp, hh)[0]


def step(cell: str, params, carry: Carry, xp):
  """One time step `(carry, x̂_t) -> (carry, h_t)`; `params` holds kernel_hh (and bias_hn)."""
  hh = output(cell, carry) @ params['kernel_hh']
  bias = recurrent_bias(cell, params)
  carry = update(cell, carry, xp, hh if bias is None else hh + bias)
  return carry, output(cell, carry)


STEPS = {cell: functools.partial(step, cell) for cell in GATES}
