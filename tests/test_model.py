"""The cells and the model: reference equations, scan vs loop, step-by-step, causality, jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import random_params
from seqlab.models import cells
from seqlab.models import char_rnn as model_lib
from seqlab.errors import SeqlabError
from seqlab.models import registry

CELLS = ['rnn', 'gru', 'lstm']


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def numpy_layer(cell, params, x_BxTxD, carry):
  """An independent float64 implementation of each cell's textbook equations."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  x_BxTxD = np.asarray(x_BxTxD, np.float64)
  if cell == 'lstm':
    c, h = (np.asarray(a, np.float64) for a in carry)
  else:
    h = np.asarray(carry, np.float64)
  hidden = p['kernel_hh'].shape[0]
  outputs = []
  for t in range(x_BxTxD.shape[1]):
    x = x_BxTxD[:, t]
    if cell == 'rnn':
      h = np.tanh(x @ p['kernel_ih'] + p['bias'] + h @ p['kernel_hh'])
    elif cell == 'gru':
      w_ih, w_hh, b = p['kernel_ih'], p['kernel_hh'], p['bias']
      blk = lambda a, k: a[..., k * hidden:(k + 1) * hidden]
      r = _sigmoid(x @ blk(w_ih, 0) + blk(b, 0) + h @ blk(w_hh, 0))
      z = _sigmoid(x @ blk(w_ih, 1) + blk(b, 1) + h @ blk(w_hh, 1))
      n = np.tanh(x @ blk(w_ih, 2) + blk(b, 2) + r * (h @ blk(w_hh, 2) + p['bias_hn']))
      h = (1 - z) * n + z * h
    else:
      gates = x @ p['kernel_ih'] + p['bias'] + h @ p['kernel_hh']
      i, f, g, o = np.split(gates, 4, axis=-1)
      c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
      h = _sigmoid(o) * np.tanh(c)
    outputs.append(h)
  final = (c, h) if cell == 'lstm' else h
  return np.stack(outputs, axis=1), final


def _layer_and_params(cell, in_dim=5, hidden=7, seed=0):
  """A layer and random parameters, biases included, so that every parameter matters."""
  layer = model_lib.RecurrentLayer(cell, hidden)
  x = jnp.zeros((2, 3, in_dim))
  return layer, random_params(layer.init, x, cells.init_carry(cell, 2, hidden), seed=seed)


def _random_carry(cell, batch, hidden, seed):
  rng = np.random.default_rng(seed)
  make = lambda: jnp.asarray(rng.normal(size=(batch, hidden)), jnp.float32)
  return (make(), make()) if cell == 'lstm' else make()


@pytest.mark.parametrize('cell', CELLS)
def test_layer_matches_numpy_equations(cell):
  layer, params = _layer_and_params(cell)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 11, 5)), jnp.float32)
  carry = _random_carry(cell, 3, 7, seed=1)
  out, final = jax.jit(layer.apply)({'params': params}, x, carry)
  ref_out, ref_final = numpy_layer(cell, params, x, carry)
  np.testing.assert_allclose(out, ref_out, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), final, ref_final)


@pytest.mark.parametrize('cell', CELLS)
def test_one_hot_input_as_ids_equals_the_one_hot_matmul(cell):
  """Layer 0 without an embedding reads ids (a row lookup of kernel_ih): the same outputs,
  carries and gradients as multiplying one-hot vectors, which it replaces."""
  vocab, hidden = 9, 7
  layer, params = _layer_and_params(cell, in_dim=vocab, hidden=hidden)
  ids_BxT = jnp.asarray(np.random.default_rng(0).integers(0, vocab, (3, 6)), jnp.int32)
  carry = _random_carry(cell, 3, hidden, seed=1)
  by_ids = model_lib.RecurrentLayer(cell, hidden, one_hot_size=vocab)

  def loss(apply_params, module, x):
    h, final = module.apply({'params': apply_params}, x, carry)
    return jnp.sum(jnp.sin(h)) + sum(jnp.sum(c ** 2) for c in jax.tree.leaves(final)), (h, final)

  value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
  (value, out), grads = value_and_grad(params, layer, jax.nn.one_hot(ids_BxT, vocab))
  (value_ids, out_ids), grads_ids = value_and_grad(params, by_ids, ids_BxT)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), out, out_ids)
  np.testing.assert_allclose(value, value_ids, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), grads,
               grads_ids)


@pytest.mark.parametrize('cell', CELLS)
def test_scan_equals_python_loop_over_cell(cell):
  layer, params = _layer_and_params(cell)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 9, 5)), jnp.float32)
  carry0 = _random_carry(cell, 3, 7, seed=3)
  out, final = jax.jit(layer.apply)({'params': params}, x, carry0)
  step_params = {k: v for k, v in params.items() if k in ('kernel_hh', 'bias_hn')}
  cell_step = jax.jit(cells.STEPS[cell])
  carry, outs = carry0, []
  for t in range(x.shape[1]):
    xp = x[:, t] @ params['kernel_ih'] + params['bias']
    carry, h = cell_step(step_params, carry, xp)
    outs.append(h)
  np.testing.assert_allclose(out, jnp.stack(outs, axis=1), atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), final, carry)


def _lm(cell, embed_size=0, num_layers=2, vocab=11, seed=0, **fields):
  """A model, random parameters for it and its config."""
  config = model_lib.ModelConfig(vocab_size=vocab, cell=cell, num_layers=num_layers,
                                 hidden_size=8, embed_size=embed_size, **fields)
  model = model_lib.CharLM(config)
  params = random_params(model.init, jnp.zeros((1, 1), jnp.int32),
                         model_lib.init_carry(config, 1), seed=seed)
  return model, params, config


@pytest.mark.parametrize('cell', CELLS)
def test_full_sequence_equals_step_by_step_with_carried_state(cell):
  model, params, config = _lm(cell, embed_size=6)
  apply = jax.jit(lambda tokens, carry: model.apply({'params': params}, tokens, carry))
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 11, size=(2, 12)), jnp.int32)
  logits, final = apply(tokens, registry.init_carry(model.config, 2))
  carry, step_logits = model_lib.init_carry(config, 2), []
  for t in range(tokens.shape[1]):
    out, carry = apply(tokens[:, t:t + 1], carry)
    step_logits.append(out[:, 0])
  np.testing.assert_allclose(logits, jnp.stack(step_logits, axis=1), atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), final, carry)
  # Two halves with the carry passed along == the whole sequence.
  first, mid = apply(tokens[:, :6], model_lib.init_carry(config, 2))
  second, _ = apply(tokens[:, 6:], mid)
  np.testing.assert_allclose(logits, jnp.concatenate([first, second], axis=1), atol=1e-5)


@pytest.mark.parametrize('cell', CELLS)
def test_causality_no_gradient_from_future_positions(cell):
  layers = [model_lib.RecurrentLayer(cell, 6), model_lib.RecurrentLayer(cell, 6)]
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 8, 4)), jnp.float32)
  carry = cells.init_carry(cell, 1, 6)
  p0 = {'params': random_params(layers[0].init, x, carry, seed=0)}
  p1 = {'params': random_params(layers[1].init, jnp.zeros((1, 8, 6)), carry, seed=1)}

  def output_at(x, t):
    h, _ = layers[0].apply(p0, x, carry)
    h, _ = layers[1].apply(p1, h, carry)
    return h[0, t].sum()

  grad_at = jax.jit(jax.grad(output_at))  # t is traced: one compilation for every position
  for t in range(8):
    grad = grad_at(x, t)[0]  # TxD
    assert np.all(grad[t + 1:] == 0.0), f'output at {t} depends on later inputs'
    assert np.all(np.abs(grad[:t + 1]).sum(axis=-1) > 0), f'output at {t} ignores earlier inputs'


def test_changing_a_later_token_leaves_earlier_logits_unchanged():
  model, params, config = _lm('lstm')
  tokens = np.random.default_rng(0).integers(0, 11, size=(1, 10)).astype(np.int32)
  changed = tokens.copy()
  changed[0, 6] = (changed[0, 6] + 1) % 11
  apply = jax.jit(lambda tokens: model.apply({'params': params}, tokens,
                                             model_lib.init_carry(config, 1)))
  (a, _), (b, _) = apply(tokens), apply(changed)
  np.testing.assert_array_equal(a[:, :6], b[:, :6])  # logits at t read tokens 0..t
  assert not np.allclose(a[:, 6:], b[:, 6:])


@pytest.mark.parametrize('cell', CELLS)
def test_jit_equals_no_jit(cell):
  model, params, config = _lm(cell, embed_size=0, num_layers=3)
  tokens = jnp.asarray(np.random.default_rng(1).integers(0, 11, size=(3, 7)), jnp.int32)
  carry = model_lib.init_carry(config, 3)
  apply = lambda p, t, c: model.apply({'params': p}, t, c)
  jitted = jax.jit(apply)(params, tokens, carry)
  with jax.disable_jit():
    eager = apply(params, tokens, carry)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), jitted, eager)


def test_lstm_forget_bias_and_orthogonal_recurrent_blocks():
  config = model_lib.ModelConfig(vocab_size=11, cell='lstm', num_layers=2, hidden_size=8)
  # The model's own initialisation (jitted: the same numbers, one compilation instead of one
  # per random op).
  params = jax.jit(model_lib.init_params, static_argnums=0)(config, 0)
  layer = params['layer_0']
  bias = np.asarray(layer['bias'])
  np.testing.assert_array_equal(bias[8:16], 1.0)  # gate order i, f, g, o; hidden 8
  np.testing.assert_array_equal(np.delete(bias, np.s_[8:16]), 0.0)
  for k in range(4):
    block = np.asarray(layer['kernel_hh'])[:, k * 8:(k + 1) * 8]
    np.testing.assert_allclose(block.T @ block, np.eye(8), atol=1e-5)


def test_dropout_only_in_training_and_bad_model_config_errors():
  model, params, config = _lm('lstm', vocab=5, dropout=0.5)
  tokens, carry = jnp.zeros((2, 4), jnp.int32), model_lib.init_carry(config, 2)
  apply = jax.jit(model.apply, static_argnames='train')
  a, _ = apply({'params': params}, tokens, carry)
  b, _ = apply({'params': params}, tokens, carry)
  np.testing.assert_array_equal(a, b)
  c, _ = apply({'params': params}, tokens, carry, train=True,
               rngs={'dropout': jax.random.PRNGKey(0)})
  assert not np.allclose(a, c)
  with pytest.raises(SeqlabError, match='model.cell'):
    model_lib.ModelConfig(vocab_size=5, cell='transformer')
  with pytest.raises(SeqlabError, match='model.dropout'):
    model_lib.ModelConfig(vocab_size=5, dropout=1.0)
