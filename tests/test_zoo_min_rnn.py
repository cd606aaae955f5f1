"""minGRU / minLSTM (seqlab.models.min_rnn): scans, carried state, causality, sampling path,
a numpy reference of the paper's equations, config errors, and a short training; then the
optional short convolution before the gates (conv_width > 0): the same checks with its
carried buffer, a numpy reference of the whole model, resets, and conv_width = 0 unchanged."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import random_params
from seqlab import steps
from seqlab.errors import SeqlabError
from seqlab.models import min_rnn
from seqlab.models import registry

CELLS = ['mingru', 'minlstm']
VOCAB = 11


def _config(cell='mingru', log_space=True, scan='associative', **fields):
  fields = {'num_layers': 2, 'width': 8, 'expansion': 2, 'mlp_ratio': 2, **fields}
  return min_rnn.MinRNNConfig(vocab_size=VOCAB, cell=cell, log_space=log_space, scan=scan,
                              **fields)


def _params(config, seed=0):
  model = min_rnn.MinRNNLM(config)
  return random_params(model.init, jnp.zeros((1, 1), jnp.int32), registry.init_carry(model.config, 1), seed=seed)


def _tokens(batch, length, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, VOCAB, (batch, length)), jnp.int32)


def _positive_carry(config, batch, seed=1):
  """A nonzero state the model can reach: h > 0 (log-space h is always positive)."""
  rng = np.random.default_rng(seed)
  return tuple(jnp.asarray(np.abs(rng.normal(size=c.shape)) + 0.1, jnp.float32)
               for c in min_rnn.init_carry(config, batch))


@functools.lru_cache(maxsize=None)
def _apply(config):
  return jax.jit(min_rnn.MinRNNLM(config).apply)


# (1) The two scans compute the same function: values and gradients (of the parameters, the
# input and the carried state), for a layer (fast) and for the whole model (slow).
def _layer_inputs(log_space, seed=3):
  rng = np.random.default_rng(seed)
  x_TxBxD = jnp.asarray(rng.normal(size=(7, 3, 5)), jnp.float32)  # odd T: an uneven split
  h0 = np.abs(rng.normal(size=(3, 6))) if log_space else rng.normal(size=(3, 6))
  h0[0] = 0.0  # one sequence starts from the zero state
  return x_TxBxD, jnp.asarray(h0, jnp.float32)


@pytest.mark.parametrize('log_space', [False, True])
@pytest.mark.parametrize('cell', CELLS)
def test_associative_equals_sequential_layer(cell, log_space):
  x_TxBxD, h0 = _layer_inputs(log_space)
  weights = jnp.asarray(np.random.default_rng(2).normal(size=(7, 3, 6)), jnp.float32)
  params = random_params(min_rnn.MinRNNLayer(cell, hidden=6).init, x_TxBxD, h0, bias_scale=1.0)
  results = {}
  for scan in min_rnn.SCANS:
    layer = min_rnn.MinRNNLayer(cell, hidden=6, scan=scan, log_space=log_space)

    def loss(params, x, h, layer=layer):
      h_TxBxH, h_last = layer.apply({'params': params}, x, h)
      return jnp.sum(h_TxBxH * weights) + jnp.sum(h_last), h_TxBxH

    results[scan] = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
        params, x_TxBxD, h0)
  (_, h_s), grads_s = results['sequential']
  (_, h_a), grads_a = results['associative']
  np.testing.assert_allclose(h_a, h_s, rtol=1e-5, atol=1e-6)
  for g_a, g_s in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_s)):
    assert np.all(np.isfinite(g_s)) and np.all(np.isfinite(g_a))
    np.testing.assert_allclose(g_a, g_s, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('log_space', [False, True])
@pytest.mark.parametrize('cell', CELLS)
def test_associative_equals_sequential_model(cell, log_space):
  configs = {s: _config(cell, log_space, s) for s in min_rnn.SCANS}
  params = _params(configs['sequential'])
  tokens = _tokens(2, 7)
  carry = _positive_carry(configs['sequential'], 2)
  carry = tuple(h.at[0].set(0.0) for h in carry)  # one sequence from the zero state
  weights = jnp.asarray(np.random.default_rng(2).normal(size=(2, 7, VOCAB)), jnp.float32)

  def loss(params, carry, config):
    logits, out = min_rnn.MinRNNLM(config).apply({'params': params}, tokens, carry)
    return jnp.sum(logits * weights) + sum(jnp.sum(h) for h in out), logits

  results = {}
  for scan, config in configs.items():
    grad_fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True), static_argnums=2)
    results[scan] = grad_fn(params, carry, config)
  (_, logits_s), grads_s = results['sequential']
  (_, logits_a), grads_a = results['associative']
  np.testing.assert_allclose(logits_a, logits_s, rtol=1e-5, atol=1e-5)
  for g_a, g_s in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_s)):
    assert np.all(np.isfinite(g_s))
    np.testing.assert_allclose(g_a, g_s, rtol=1e-4, atol=1e-5)


# Model-level tests run two configurations in the fast tier (each compiles a few shapes, about
# a second each on 2 cores) and the other two in the slow one.
MODEL_CASES = [('mingru', False, 'associative'), ('minlstm', True, 'sequential'),
               pytest.param('mingru', True, 'associative', marks=pytest.mark.slow),
               pytest.param('minlstm', False, 'associative', marks=pytest.mark.slow)]


# (2) Carried state: two chunks are one long sequence.
@pytest.mark.parametrize('cell, log_space, scan', MODEL_CASES)
def test_two_chunks_equal_one_sequence(cell, log_space, scan):
  config = _config(cell, log_space, scan)
  params, tokens = {'params': _params(config)}, _tokens(3, 8)
  apply, carry = _apply(config), min_rnn.init_carry(config, 3)
  whole, whole_carry = apply(params, tokens, carry)
  first, carry = apply(params, tokens[:, :4], carry)
  second, carry = apply(params, tokens[:, 4:], carry)
  np.testing.assert_allclose(jnp.concatenate([first, second], axis=1), whole, rtol=1e-5,
                             atol=1e-5)
  for h, h_whole in zip(carry, whole_carry):
    np.testing.assert_allclose(h, h_whole, rtol=1e-5, atol=1e-6)


# (3) Causality.
@pytest.mark.parametrize('cell, log_space, scan', MODEL_CASES)
def test_causal(cell, log_space, scan):
  config = _config(cell, log_space, scan)
  _assert_causal(config, min_rnn.init_carry(config, 3))


def _assert_causal(config, carry):
  """Changing token 5 leaves logits 0-4 unchanged and changes logit 5 (batch 3, length 8)."""
  params, tokens = {'params': _params(config)}, _tokens(3, 8)
  changed = tokens.at[:, 5].set((tokens[:, 5] + 1) % VOCAB)
  logits, _ = _apply(config)(params, tokens, carry)
  logits_changed, _ = _apply(config)(params, changed, carry)
  np.testing.assert_array_equal(logits_changed[:, :5], logits[:, :5])
  assert np.all(np.abs(logits_changed[:, 5] - logits[:, 5]).max(axis=-1) > 1e-4)


# (4) The sampling path: one token at a time with the carry is the whole-sequence forward.
@pytest.mark.parametrize('cell, log_space, scan', MODEL_CASES)
def test_step_by_step_equals_sequence(cell, log_space, scan):
  config = _config(cell, log_space, scan)
  params, tokens = {'params': _params(config)}, _tokens(3, 8)
  whole, whole_carry = _apply(config)(params, tokens, min_rnn.init_carry(config, 3))
  carry, steps = min_rnn.init_carry(config, 3), []
  for t in range(tokens.shape[1]):
    logits, carry = _apply(config)(params, tokens[:, t:t + 1], carry)
    steps.append(logits)
  np.testing.assert_allclose(jnp.concatenate(steps, axis=1), whole, rtol=1e-5, atol=1e-5)
  for h, h_whole in zip(carry, whole_carry):
    np.testing.assert_allclose(h, h_whole, rtol=1e-5, atol=1e-6)


# (5) The recurrence against the paper's equations, a float64 loop over time.
def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _g(x):
  return np.where(x >= 0, x + 0.5, _sigmoid(x))


def numpy_min_rnn(cell, log_space, kernel, bias, x_TxBxD, h_BxH):
  kernel, bias = np.asarray(kernel, np.float64), np.asarray(bias, np.float64)
  h, hidden, outputs = np.asarray(h_BxH, np.float64), h_BxH.shape[-1], []
  for x in np.asarray(x_TxBxD, np.float64):
    pre = x @ kernel + bias
    block = lambda k: pre[:, k * hidden:(k + 1) * hidden]
    if cell == 'mingru':
      z, h_tilde = _sigmoid(block(0)), block(1)
      forget, gate = 1 - z, z
    else:
      f, i, h_tilde = _sigmoid(block(0)), _sigmoid(block(1)), block(2)
      forget, gate = f / (f + i), i / (f + i)
    h = forget * h + gate * (_g(h_tilde) if log_space else h_tilde)
    outputs.append(h)
  return np.stack(outputs), h


@pytest.mark.parametrize('log_space', [False, True])
@pytest.mark.parametrize('cell', CELLS)
def test_layer_matches_numpy_reference(cell, log_space):
  x_TxBxD, h0 = _layer_inputs(log_space)
  params = random_params(min_rnn.MinRNNLayer(cell, hidden=6).init, x_TxBxD, h0, bias_scale=1.0)
  kernel, bias = params['gates']['kernel'], params['gates']['bias']
  for scan in min_rnn.SCANS:
    layer = min_rnn.MinRNNLayer(cell, hidden=6, scan=scan, log_space=log_space)
    h_TxBxH, h_last = jax.jit(layer.apply)({'params': params}, x_TxBxD, h0)
    ref_TxBxH, ref_last = numpy_min_rnn(cell, log_space, kernel, bias, x_TxBxD, h0)
    np.testing.assert_allclose(h_TxBxH, ref_TxBxH, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(h_last, ref_last, rtol=2e-5, atol=2e-6)
  h_tilde = (np.asarray(x_TxBxD) @ kernel + bias)[..., -6:]
  assert (h_tilde > 0).any() and (h_tilde < 0).any()  # both branches of g are used


# (6) Bad configurations are one-line SeqlabErrors.
@pytest.mark.parametrize('fields, words', [
    ({'cell': 'gru'}, 'model.cell'),
    ({'scan': 'parallel'}, 'model.scan'),
    ({'vocab_size': 0}, 'model.vocab_size'),
    ({'num_layers': 0}, 'model.num_layers'),
    ({'width': -3}, 'model.width'),
    ({'width': 2.5}, 'model.width'),
    ({'expansion': 0}, 'model.expansion'),
    ({'expansion': 1.3, 'width': 8}, 'model.expansion'),
    ({'mlp_ratio': -1}, 'model.mlp_ratio'),
    ({'mlp_ratio': float('nan')}, 'model.mlp_ratio'),
    ({'dropout': 1.0}, 'model.dropout'),
    ({'dropout': -0.1}, 'model.dropout'),
    ({'log_space': 'yes'}, 'model.log_space'),
    ({'conv_width': -1}, 'model.conv_width'),
    ({'conv_width': 4.0}, 'model.conv_width'),
    ({'conv_width': True}, 'model.conv_width'),
])
def test_bad_config_is_one_line_error(fields, words):
  with pytest.raises(SeqlabError) as raised:
    min_rnn.MinRNNConfig(**{'vocab_size': VOCAB, **fields})
  assert words in str(raised.value) and '\n' not in str(raised.value)


def test_config_fields():
  config = min_rnn.MinRNNConfig.from_config({'cell': 'minlstm', 'width': 8, 'expansion': 1.5,
                                             'hidden_size': 99}, vocab_size=5)
  assert (config.cell, config.hidden, config.vocab_size) == ('minlstm', 12, 5)
  assert [h.shape for h in min_rnn.init_carry(config, 4)] == [(4, 12)] * config.num_layers


# Dropout: only when training, with a traced rate; rate 0 keeps every unit.
def test_dropout_traced_rate():
  config = _config('minlstm', True, 'sequential')  # eval forward compiled by the tests above
  model, params, tokens = min_rnn.MinRNNLM(config), {'params': _params(config)}, _tokens(3, 8)
  carry = registry.init_carry(model.config, 3)

  @jax.jit
  def train_logits(rate, key):
    return model.apply(params, tokens, carry, train=True, dropout_rate=rate,
                       rngs={'dropout': key})[0]

  key = jax.random.PRNGKey(0)
  eval_logits = _apply(config)(params, tokens, carry)[0]
  np.testing.assert_allclose(train_logits(0.0, key), eval_logits, rtol=1e-6, atol=1e-6)
  assert np.abs(train_logits(0.5, key) - eval_logits).max() > 1e-3
  assert np.abs(train_logits(0.5, key) - train_logits(0.5, jax.random.PRNGKey(1))).max() > 1e-3


# (7) Behaviour: a few Adam steps on a repeating text lower the loss (from the real init).
@pytest.mark.slow
@pytest.mark.parametrize('cell, log_space, scan', [
    ('minlstm', True, 'sequential'), ('mingru', False, 'associative')])
def test_adam_learns_repeating_text(cell, log_space, scan):
  text = 'the cat sat on the mat. ' * 20
  chars = sorted(set(text))
  ids = np.array([chars.index(c) for c in text], np.int32)
  config = min_rnn.MinRNNConfig(vocab_size=len(chars), cell=cell, log_space=log_space,
                                scan=scan, num_layers=1, width=16, expansion=2, mlp_ratio=0)
  model = min_rnn.MinRNNLM(config)
  params = registry.init_params(config, seed=0)
  optimizer = optax.adam(1e-2)
  starts = np.arange(0, len(ids) - 17, 13)[:8]
  inputs = jnp.asarray(np.stack([ids[s:s + 16] for s in starts]))
  targets = jnp.asarray(np.stack([ids[s + 1:s + 17] for s in starts]))
  carry = registry.init_carry(model.config, len(starts))

  def loss_fn(params):
    logits, _ = model.apply({'params': params}, inputs, carry, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

  @jax.jit
  def step(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state, losses = optimizer.init(params), []
  for _ in range(41):  # the loss of step i is that of the parameters after i updates
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  assert losses[0] > 2.0 and losses[-1] < 0.25 * losses[0], losses[::10]


# (8) The short convolution (conv_width = K > 0): a causal depthwise conv of the normalised
# block input, before the gates; the carry holds each layer's last K-1 conv inputs.
CONV_CASES = [('mingru', True, 'associative'),  # configs/zoo.py:feng_mingru's form
              pytest.param('minlstm', False, 'sequential', marks=pytest.mark.slow)]


def _random_carry(config, batch, seed=1):
  """A nonzero state the model can reach: conv inputs of any sign, h > 0."""
  rng = np.random.default_rng(seed)
  return tuple({'conv': jnp.asarray(rng.normal(size=c['conv'].shape), jnp.float32),
                'h': jnp.asarray(np.abs(rng.normal(size=c['h'].shape)) + 0.1, jnp.float32)}
               for c in min_rnn.init_carry(config, batch))


def _assert_carry_close(carry, expected):
  for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('cell, log_space, scan', CONV_CASES)
def test_conv_chunks_equal_one_sequence(cell, log_space, scan):
  """Four chunks of 2 steps (< K-1: part of the conv buffer is older input), from a nonzero
  carry."""
  config = _config(cell, log_space, scan, conv_width=4)
  params, tokens = {'params': _params(config)}, _tokens(3, 8)
  apply, carry = _apply(config), _random_carry(config, 3)
  whole, whole_carry = apply(params, tokens, carry)
  outputs = []
  for start in range(0, 8, 2):
    logits, carry = apply(params, tokens[:, start:start + 2], carry)
    outputs.append(logits)
  np.testing.assert_allclose(jnp.concatenate(outputs, axis=1), whole, rtol=1e-5, atol=1e-5)
  _assert_carry_close(carry, whole_carry)


@pytest.mark.parametrize('cell, log_space, scan', CONV_CASES)
def test_conv_causal(cell, log_space, scan):
  config = _config(cell, log_space, scan, conv_width=4)
  _assert_causal(config, _random_carry(config, 3))


@pytest.mark.parametrize('cell, log_space, scan', CONV_CASES)
def test_conv_step_by_step_equals_sequence(cell, log_space, scan):
  config = _config(cell, log_space, scan, conv_width=4)
  params, tokens = {'params': _params(config)}, _tokens(3, 8)
  whole, whole_carry = _apply(config)(params, tokens, min_rnn.init_carry(config, 3))
  carry, outputs = min_rnn.init_carry(config, 3), []
  for t in range(tokens.shape[1]):
    logits, carry = _apply(config)(params, tokens[:, t:t + 1], carry)
    outputs.append(logits)
  np.testing.assert_allclose(jnp.concatenate(outputs, axis=1), whole, rtol=1e-5, atol=1e-5)
  _assert_carry_close(carry, whole_carry)


def _rms_norm(x, scale):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-6) * scale


def _gelu(x):  # flax's nn.gelu: the tanh approximation
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def numpy_causal_conv(kernel_KxD, bias_D, u_TxBxD, state_BxKm1xD):
  """y_t = b + sum_k w[k] u_{t-K+1+k}, u_{-K+1} .. u_{-1} from the state; (y, new state)."""
  K, T = kernel_KxD.shape[0], u_TxBxD.shape[0]
  full = np.concatenate([np.swapaxes(state_BxKm1xD, 0, 1), u_TxBxD])  # (K-1+T) x B x D
  y = np.stack([bias_D + sum(kernel_KxD[k] * full[t + k] for k in range(K)) for t in range(T)])
  return y, np.swapaxes(full[T:], 0, 1)


def numpy_model(config, params, tokens_BxT, carry):
  """The whole model, float64, written from the module docstring: embedding -> blocks
  (x + OutProj(MinRNN(Conv(RMSNorm(x)))), x + MLP(RMSNorm(x))) -> RMSNorm -> decoder."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  x = p['embed']['embedding'][np.asarray(tokens_BxT).T]  # T x B x D
  new_carry = []
  for i in range(config.num_layers):
    u = _rms_norm(x, p[f'rnn_norm_{i}']['scale'])
    conv = p[f'conv_{i}']
    u, conv_state = numpy_causal_conv(conv['kernel'], conv['bias'], u,
                                      np.asarray(carry[i]['conv'], np.float64))
    gates = p[f'rnn_{i}']['gates']
    h_TxBxH, h = numpy_min_rnn(config.cell, config.log_space, gates['kernel'], gates['bias'], u,
                               np.asarray(carry[i]['h'], np.float64))
    new_carry.append({'conv': conv_state, 'h': h})
    out = p[f'rnn_out_{i}']
    x = x + h_TxBxH @ out['kernel'] + out['bias']
    y = _rms_norm(x, p[f'mlp_norm_{i}']['scale']) @ p[f'mlp_in_{i}']['kernel'] + \
        p[f'mlp_in_{i}']['bias']
    x = x + _gelu(y) @ p[f'mlp_out_{i}']['kernel'] + p[f'mlp_out_{i}']['bias']
  x = _rms_norm(x, p['final_norm']['scale'])
  logits = x @ p['decoder']['kernel'] + p['decoder']['bias']
  return np.swapaxes(logits, 0, 1), tuple(new_carry)


@pytest.mark.parametrize('cell, log_space, scan', CONV_CASES)
def test_conv_model_matches_numpy_reference(cell, log_space, scan):
  config = _config(cell, log_space, scan, conv_width=4)
  params, tokens = _params(config), _tokens(3, 8, seed=4)
  carry = _random_carry(config, 3, seed=5)
  logits, final = _apply(config)({'params': params}, tokens, carry)
  ref_logits, ref_final = numpy_model(config, params, tokens, carry)
  np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-5)
  for got, want in zip(jax.tree.leaves(final), jax.tree.leaves(ref_final)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # The conv mixes time: its older taps change the output (it is not a pointwise map).
  shifted = ({**carry[0], 'conv': carry[0]['conv'] + 1.0},) + carry[1:]
  changed = _apply(config)({'params': params}, tokens, shifted)[0]
  assert np.abs(changed[:, 0] - logits[:, 0]).max() > 1e-4


@pytest.mark.slow  # compiles a training step
def test_conv_reset_zeroes_the_conv_buffer():
  """The train step's reset zeroes every carry leaf, the conv buffer included: from a carry
  whose only nonzero part is the conv buffer, a reset step is the step from the zero state."""
  config = _config('minlstm', False, 'sequential', conv_width=4, num_layers=1)  # compiles fast
  model, params = min_rnn.MinRNNLM(config), _params(config)
  inputs, targets = _tokens(3, 8), _tokens(3, 8, seed=1)
  optimizer = optax.sgd(0.1)
  train_step = jax.jit(steps.make_train_step(model, optimizer, lambda step: 0.1))
  conv_only = tuple({'conv': c['conv'], 'h': jnp.zeros_like(c['h'])}
                    for c in _random_carry(config, 3))
  state = lambda carry: steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                         opt_state=optimizer.init(params), carry=carry,
                                         rng=jax.random.PRNGKey(0))
  zero = state(min_rnn.init_carry(config, 3))
  from_zero, zero_metrics = train_step(zero, inputs, targets, np.bool_(False))
  reset, reset_metrics = train_step(state(conv_only), inputs, targets, np.bool_(True))
  _, kept_metrics = train_step(state(conv_only), inputs, targets, np.bool_(False))
  assert float(reset_metrics['loss']) == float(zero_metrics['loss'])
  for got, want in zip(jax.tree.leaves((reset.params, reset.carry)),
                       jax.tree.leaves((from_zero.params, from_zero.carry))):
    np.testing.assert_array_equal(got, want)
  assert abs(float(kept_metrics['loss']) - float(zero_metrics['loss'])) > 1e-5  # it mattered


# The parameters of a model without the conv, as min_rnn.py made them before conv_width
# existed (commit d340438, this test file's _config): a run saved then still loads.
PARAMS_WITHOUT_CONV = {
    'decoder': {'bias': (11,), 'kernel': (8, 11)}, 'embed': {'embedding': (11, 8)},
    'final_norm': {'scale': (8,)},
    **{f'mlp_in_{i}': {'bias': (16,), 'kernel': (8, 16)} for i in (0, 1)},
    **{f'mlp_norm_{i}': {'scale': (8,)} for i in (0, 1)},
    **{f'mlp_out_{i}': {'bias': (8,), 'kernel': (16, 8)} for i in (0, 1)},
    **{f'rnn_{i}': {'gates': {'bias': (32,), 'kernel': (8, 32)}} for i in (0, 1)},
    **{f'rnn_norm_{i}': {'scale': (8,)} for i in (0, 1)},
    **{f'rnn_out_{i}': {'bias': (8,), 'kernel': (16, 8)} for i in (0, 1)},
}


def _param_shapes(config):
  model = min_rnn.MinRNNLM(config)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32),
                          registry.init_carry(model.config, 1))['params']
  return jax.tree.map(lambda s: tuple(s.shape), shapes)


def test_conv_width_zero_is_the_model_without_conv():
  plain = _config()
  assert plain.conv_width == 0
  assert _param_shapes(plain) == PARAMS_WITHOUT_CONV
  carry = min_rnn.init_carry(plain, 3)  # a tuple of h arrays, as before
  assert isinstance(carry, tuple) and [h.shape for h in carry] == [(3, 16)] * 2
  with_conv = _config(conv_width=4)
  assert _param_shapes(with_conv) == {
      **PARAMS_WITHOUT_CONV, **{f'conv_{i}': {'bias': (8,), 'kernel': (4, 8)} for i in (0, 1)}}
  assert jax.tree.map(jnp.shape, min_rnn.init_carry(with_conv, 3)) == (
      {'conv': (3, 3, 8), 'h': (3, 16)},) * 2
