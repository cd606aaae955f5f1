"""Scanning a cell over time, with a hand-written backward pass (`jax.custom_vjp`).

`scan(cell, kernel_hh, bias_hh, xp_TxBxG, carry) -> (h_TxBxH, carry)`.

Why a custom VJP: differentiating `lax.scan` automatically gives a backward
scan that, at every step, also accumulates the weight gradient
`dW_hh += h_{t-1}^T dhh_t` -- a small matmul plus a read-modify-write of the
whole H x G accumulator per step. Here the backward scan only propagates
`dh_{t-1} = dhh_t W_hh^T` (one matmul per step) and emits `dhh_t`; the weight
gradient is then one large (H x T*B) @ (T*B x G) matmul after the scan. The
forward pass saves the carry and the gate activations of every step (what
automatic differentiation would save too), and each cell's backward step is
written by hand in `seqlab.cells` over whole gate blocks (the automatic one
slices and pads the gate block, which is several times slower on CPU).

`backward='autodiff'` differentiates the plain scan instead: the reference the
tests compare the fused pass against (values and gradients).

`matmul_dtype='bfloat16'` (for GPU/TPU) feeds every matmul bf16 inputs and
accumulates in fp32; the carry, the gate arithmetic and the gradients stay fp32.
"""

import functools

import jax
import jax.numpy as jnp

from seqlab.models import cells

BACKWARDS = ('fused', 'autodiff')
MATMUL_DTYPES = ('float32', 'bfloat16')


def matmul(a, b, dtype: str = 'float32', subscripts: str | None = None):
  """`a @ b` (or an einsum) with inputs cast to `dtype` and an fp32 result."""
  a, b = a.astype(dtype), b.astype(dtype)
  if subscripts is None:
    return jnp.matmul(a, b, preferred_element_type=jnp.float32)
  return jnp.einsum(subscripts, a, b, preferred_element_type=jnp.float32)


def _recurrent_input(cell, carry, kernel_hh, bias_hh, dtype):
  hh = matmul(cells.output(cell, carry), kernel_hh, dtype)
  return hh if bias_hh is None else hh + bias_hh


def _plain_scan(cell, unroll, dtype, kernel_hh, bias_hh, xp_TxBxG, carry):
  def step(carry, xp_t):
    carry = cells.update(cell, carry, xp_t,
                         _recurrent_input(cell, carry, kernel_hh, bias_hh, dtype))
    return carry, cells.output(cell, carry)

  carry, h_TxBxH = jax.lax.scan(step, carry, xp_TxBxG, unroll=unroll)
  return h_TxBxH, carry


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _fused_scan(cell, unroll, dtype, kernel_hh, bias_hh, xp_TxBxG, carry):
  return _plain_scan(cell, unroll, dtype, kernel_hh, bias_hh, xp_TxBxG, carry)


def _shift_in(first, rest_Tx):
  """[first, rest[0], ..., rest[T-2]]: the carries *before* each step."""
  return jnp.concatenate([first[None], rest_Tx[:-1]], axis=0)


def _fused_forward(cell, unroll, dtype, kernel_hh, bias_hh, xp_TxBxG, carry0):
  def step(carry, xp_t):
    new_carry, saved = cells.FORWARDS[cell](
        carry, xp_t, _recurrent_input(cell, carry, kernel_hh, bias_hh, dtype))
    return new_carry, (new_carry, saved)

  carry, (carries, saved) = jax.lax.scan(step, carry0, xp_TxBxG, unroll=unroll)
  h_TxBxH = cells.output(cell, carries)
  return (h_TxBxH, carry), (kernel_hh, bias_hh, carry0, carries, saved)


def _fused_backward(cell, unroll, dtype, residuals, cotangents):
  kernel_hh, bias_hh, carry0, carries, saved = residuals
  dh_TxBxH, dcarry = cotangents
  prev_carries = jax.tree.map(_shift_in, carry0, carries)
  backward = cells.BACKWARDS[cell]
  # Transposed once, outside the loop: `dhh_t @ kernel_hh.T` inside it makes XLA:CPU re-pack
  # the transposed kernel at every step (M: 89 -> 60 us per step).
  kernel_hh_t = kernel_hh.T

  def step(dcarry, inputs):
    carry_prev, carry, saved_t, dh_t = inputs
    # h_t is both the output at t and part of the carry: its cotangents add up.
    dcarry = cells.with_output(cell, dcarry, cells.output(cell, dcarry) + dh_t)
    dcarry_prev, dxp_t, dhh_t = backward(carry_prev, carry, saved_t, dcarry)
    dh_prev = matmul(dhh_t, kernel_hh_t, dtype)
    direct = cells.output(cell, dcarry_prev) if dcarry_prev is not None else None
    if direct is not None:
      dh_prev = dh_prev + direct
    # LSTM and RNN: dxp == dhh (x̂ and hh enter as a sum); emit it once.
    return dh_prev if cell == 'rnn' else cells.with_output(cell, dcarry_prev, dh_prev), \
        (dxp_t, None if dhh_t is dxp_t else dhh_t)

  dcarry0, (dxp_TxBxG, dhh_TxBxG) = jax.lax.scan(
      step, dcarry, (prev_carries, carries, saved, dh_TxBxH), reverse=True, unroll=unroll)
  dhh_TxBxG = dxp_TxBxG if dhh_TxBxG is None else dhh_TxBxG
  h_prev_TxBxH = cells.output(cell, prev_carries)
  dkernel_hh = matmul(h_prev_TxBxH, dhh_TxBxG, dtype, 'tbh,tbg->hg')  # one large matmul
  dbias_hh = None if bias_hh is None else jnp.sum(dhh_TxBxG, axis=(0, 1))
  return dkernel_hh, dbias_hh, dxp_TxBxG, dcarry0


_fused_scan.defvjp(_fused_forward, _fused_backward)


def scan(cell: str, kernel_hh, bias_hh, xp_TxBxG, carry, unroll: int = 1,
         backward: str = 'fused', matmul_dtype: str = 'float32'):
  """Runs the cell over the time axis of `xp_TxBxG` (the hoisted input projection).

  `bias_hh` (None or G) is added to `h @ kernel_hh` inside the cell (GRU's b_hn).
  Returns (h_TxBxH, final carry). `backward` only changes how gradients are computed.
  """
  if backward == 'fused':
    return _fused_scan(cell, unroll, matmul_dtype, kernel_hh, bias_hh, xp_TxBxG, carry)
  if backward == 'autodiff':
    return _plain_scan(cell, unroll, matmul_dtype, kernel_hh, bias_hh, xp_TxBxG, carry)
  raise ValueError(f'backward must be one of {BACKWARDS}, got {backward!r}')
