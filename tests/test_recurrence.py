"""The fused backward pass (custom VJP) against automatic differentiation of the plain scan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import random_params
from seqlab.models import cells
from seqlab.models import char_rnn as model_lib
from seqlab.models import recurrence
from seqlab.models import registry

CELLS = ['rnn', 'gru', 'lstm']
# Model-level cases of the cells other than the LSTM: the full suite (the cell-level tests above
# cover every cell in the fast tier).
MODEL_CELLS = [pytest.param('rnn', marks=pytest.mark.slow),
               pytest.param('gru', marks=pytest.mark.slow), 'lstm']


def _random(shape, seed, scale=0.5):
  return jnp.asarray(np.random.default_rng(seed).normal(scale=scale, size=shape), jnp.float32)


def _model(vocab=11, **fields):
  """A 2-layer model and random parameters for it (the same for every `backward`/`unroll`)."""
  config = model_lib.ModelConfig(vocab_size=vocab, num_layers=2, **fields)
  model = model_lib.CharLM(config)
  params = random_params(model.init, jnp.zeros((1, 1), jnp.int32),
                         model_lib.init_carry(config, 1), seed=0)
  return model, params


@pytest.mark.parametrize('cell', CELLS)
def test_fused_scan_gradients_equal_autodiff(cell):
  hidden, gates, steps, batch = 6, cells.GATES[cell], 9, 3
  kernel = _random((hidden, gates * hidden), 0)
  bias = _random((gates * hidden,), 1) if cell == 'gru' else None
  xp = _random((steps, batch, gates * hidden), 2, scale=1.0)
  carry = (_random((batch, hidden), 3), _random((batch, hidden), 4)) if cell == 'lstm' \
      else _random((batch, hidden), 3)
  # A loss that reads every output and the final carry, with random weights.
  w_out, w_carry = _random((steps, batch, hidden), 5), _random((batch, hidden), 6)

  def loss(backward, kernel, bias, xp, carry):
    h, final = recurrence.scan(cell, kernel, bias, xp, carry, backward=backward)
    return jnp.sum(h * w_out) + sum(jnp.sum(jnp.tanh(c) * w_carry)
                                    for c in jax.tree.leaves(final))

  args = (kernel, bias, xp, carry)
  value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(1, 2, 3, 4)), static_argnums=0)
  fused_value, fused = value_and_grad('fused', *args)
  ref_value, ref = value_and_grad('autodiff', *args)
  np.testing.assert_allclose(fused_value, ref_value, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), fused, ref)
  assert all(np.abs(g).sum() > 0 for g in jax.tree.leaves(fused))


@pytest.mark.parametrize('cell', MODEL_CELLS)
@pytest.mark.parametrize('unroll', [1, 3])
def test_model_loss_gradients_fused_equal_autodiff(cell, unroll):
  """The whole model (two layers, embedding, dropout off) and its carried state."""
  def grads(backward):
    model, params = _model(cell=cell, hidden_size=8, unroll=unroll, backward=backward)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 11, size=(4, 10)), jnp.int32)
    carry0 = jax.tree.map(lambda c: c + 0.1, registry.init_carry(model.config, 4))

    def loss(params, carry):
      logits, final = model.apply({'params': params}, tokens[:, :-1], carry)
      nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1).mean()
      return nll + 0.01 * sum(jnp.sum(c ** 2) for c in jax.tree.leaves(final))
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, carry0)

  fused, ref = grads('fused'), grads('autodiff')
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), fused, ref)


@pytest.mark.parametrize('cell', MODEL_CELLS)
def test_bfloat16_matmuls_stay_close_to_fp32_and_fused_equals_autodiff(cell):
  """bf16 matmul inputs: logits, loss and gradients near fp32's, all in fp32; fused ~ autodiff.

The two bf16 backward passes round different intermediates to bf16, so they agree
to bf16 precision (about 1% of each gradient's scale), not to fp32's.
"""
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 11, size=(4, 10)), jnp.int32)

  def run(dtype, backward):
    model, params = _model(cell=cell, hidden_size=16, matmul_dtype=dtype, backward=backward)

    def loss(params):
      logits, _ = model.apply({'params': params}, tokens[:, :-1], registry.init_carry(model.config, 4))
      nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1).mean()
      return nll, logits
    return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

  (loss32, logits32), grads32 = run('float32', 'fused')
  (loss16, logits16), grads16 = run('bfloat16', 'fused')
  (_, _), grads16_ref = run('bfloat16', 'autodiff')
  assert logits16.dtype == jnp.float32 and all(
      g.dtype == jnp.float32 for g in jax.tree.leaves(grads16))
  assert not np.array_equal(logits16, logits32)  # bf16 is really used
  np.testing.assert_allclose(logits16, logits32, atol=3e-2)
  np.testing.assert_allclose(loss16, loss32, rtol=5e-3)
  for reference in (grads16_ref, grads32):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-2 * np.abs(b).max()),
                 grads16, reference)
