"""Scanning a cell over time, with a hand-written backward pass (`jax.custom_vjp`).

`scan(cell, kernel_hh, bias_hh, xp_TxBxG, carry) -> (h_TxBxH, carry)`.

Why a custom VJP: differentiating `lax.scan` automatically gives a backward
scan that, at every step, also accumulates the weight gradient
`dW_hh += h_{t-1}^T dhh_t` -- a small matmul plus a read-modify-write of the
whole H x G accumulator per step. Here the backward scan only propagates
`dh_{t-1} = dhh_t W_hh^T` (one matmul per step) and emits `dhh_t`; the weight
gradient is then one large (H x T*B) @ (T*B x G) matmul after the scan. The
forward pass saves the pre-update carry and `hh` of every step (what automatic
differentiation would save too); the elementwise gate math is recomputed in the
backward step by `jax.vjp` of the cell's update, which is cheap.

`backward='autodiff'` differentiates the plain scan instead: the reference the
tests compare the fused pass against (values and gradients).
"""

import functools

import jax
import jax.numpy as jnp

from seqlab import cells

BACKWARDS = ('fused', 'autodiff')


def _recurrent_input(cell, carry, kernel_hh, bias_hh):
  hh = cells.output(cell, carry) @ kernel_hh
  return hh if bias_hh is None else hh + bias_hh


def _plain_scan(cell, unroll, kernel_hh, bias_hh, xp_TxBxG, carry):
  def step(carry, xp_t):
    carry = cells.UPDATES[cell](carry, xp_t, _recurrent_input(cell, carry, kernel_hh, bias_hh))
    return carry, cells.output(cell, carry)

  carry, h_TxBxH = jax.lax.scan(step, carry, xp_TxBxG, unroll=unroll)
  return h_TxBxH, carry


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _fused_scan(cell, unroll, kernel_hh, bias_hh, xp_TxBxG, carry):
  return _plain_scan(cell, unroll, kernel_hh, bias_hh, xp_TxBxG, carry)


def _fused_forward(cell, unroll, kernel_hh, bias_hh, xp_TxBxG, carry0):
  def step(carry, xp_t):
    hh = _recurrent_input(cell, carry, kernel_hh, bias_hh)
    new_carry = cells.UPDATES[cell](carry, xp_t, hh)
    return new_carry, (cells.output(cell, new_carry), hh, carry)

  carry, (h_TxBxH, hh_TxBxG, prev_carries) = jax.lax.scan(step, carry0, xp_TxBxG, unroll=unroll)
  return (h_TxBxH, carry), (kernel_hh, bias_hh, xp_TxBxG, hh_TxBxG, prev_carries)


def _fused_backward(cell, unroll, residuals, cotangents):
  kernel_hh, bias_hh, xp_TxBxG, hh_TxBxG, prev_carries = residuals
  dh_TxBxH, dcarry = cotangents
  update = cells.UPDATES[cell]

  def step(dcarry, inputs):
    xp_t, hh_t, carry_prev, dh_t = inputs
    # h_t is both the output at t and part of the carry: its cotangents add up.
    dcarry = cells.with_output(cell, dcarry, cells.output(cell, dcarry) + dh_t)
    _, update_vjp = jax.vjp(update, carry_prev, xp_t, hh_t)
    dcarry_prev, dxp_t, dhh_t = update_vjp(dcarry)
    dh_prev = cells.output(cell, dcarry_prev) + dhh_t @ kernel_hh.T
    return cells.with_output(cell, dcarry_prev, dh_prev), (dxp_t, dhh_t)

  dcarry0, (dxp_TxBxG, dhh_TxBxG) = jax.lax.scan(
      step, dcarry, (xp_TxBxG, hh_TxBxG, prev_carries, dh_TxBxH), reverse=True, unroll=unroll)
  h_prev_TxBxH = cells.output(cell, prev_carries)
  dkernel_hh = jnp.einsum('tbh,tbg->hg', h_prev_TxBxH, dhh_TxBxG)  # one large matmul
  dbias_hh = None if bias_hh is None else jnp.sum(dhh_TxBxG, axis=(0, 1))
  return dkernel_hh, dbias_hh, dxp_TxBxG, dcarry0


_fused_scan.defvjp(_fused_forward, _fused_backward)


def scan(cell: str, kernel_hh, bias_hh, xp_TxBxG, carry, unroll: int = 1,
         backward: str = 'fused'):
  """Runs the cell over the time axis of `xp_TxBxG` (the hoisted input projection).

  `bias_hh` (None or G) is added to `h @ kernel_hh` inside the cell (GRU's b_hn).
  Returns (h_TxBxH, final carry). `backward` only changes how gradients are computed.
  """
  if backward == 'fused':
    return _fused_scan(cell, unroll, kernel_hh, bias_hh, xp_TxBxG, carry)
  if backward == 'autodiff':
    return _plain_scan(cell, unroll, kernel_hh, bias_hh, xp_TxBxG, carry)
  raise ValueError(f'backward must be one of {BACKWARDS}, got {backward!r}')
