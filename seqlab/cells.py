"""Recurrent cells as pure step functions `(carry, x_proj_t) -> (carry, h_t)`.

The input projection `x_t @ W_ih + b` of every time step is computed before the
scan in one large matmul (see `model.RecurrentLayer`), so a step only does the
recurrent matmul `h @ W_hh` and the elementwise gate math. Gates are fused into
one matrix: column blocks in the order given by `GATES`.

Equations (x̂ = x W_ih + b, the hoisted projection; ⊙ elementwise):
  rnn:  h' = tanh(x̂ + h W_hh)                         (the post's RNN)
  gru:  r = σ(x̂_r + h W_hr), z = σ(x̂_z + h W_hz)
        n = tanh(x̂_n + r ⊙ (h W_hn + b_hn))
        h' = (1 - z) ⊙ n + z ⊙ h                       (as cuDNN / PyTorch)
  lstm: i, f, g, o = σ(·), σ(·), tanh(·), σ(·) of x̂ + h W_hh
        c' = f ⊙ c + i ⊙ g,  h' = o ⊙ tanh(c')
"""

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


def rnn_step(params, h, xp):
  return (h := jnp.tanh(xp + h @ params['kernel_hh'])), h


def gru_step(params, h, xp):
  hidden = h.shape[-1]
  hh = h @ params['kernel_hh']
  r = jax.nn.sigmoid(xp[..., :hidden] + hh[..., :hidden])
  z = jax.nn.sigmoid(xp[..., hidden:2 * hidden] + hh[..., hidden:2 * hidden])
  n = jnp.tanh(xp[..., 2 * hidden:] + r * (hh[..., 2 * hidden:] + params['bias_hn']))
  h = (1.0 - z) * n + z * h
  return h, h


def lstm_step(params, carry, xp):
  c, h = carry
  gates = xp + h @ params['kernel_hh']
  i, f, g, o = jnp.split(gates, 4, axis=-1)
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  return (c, h), h


STEPS = {'rnn': rnn_step, 'gru': gru_step, 'lstm': lstm_step}
