"""Hawk (seqlab.models.hawk): scan forms, carried state, causality, sampling path, numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import random_params
from seqlab.errors import SeqlabError
from seqlab.models import hawk
from seqlab.models import registry

V, B, T = 11, 2, 12
SCANS = hawk.SCANS


def _model(scan='sequential', seed=0, **fields):
  """A 2-layer model (lru_width != width, conv_width 4) and random parameters for it, with the
  RG-LRU's a spread over (0.09, 0.99) so that the state is remembered over the sequence."""
  config = hawk.HawkConfig(**{'vocab_size': V, 'num_layers': 2, 'width': 8, 'lru_width': 12,
                              'scan': scan, **fields})
  model = hawk.HawkLM(config)
  params = random_params(model.init, jnp.zeros((1, 1), jnp.int32), hawk.init_carry(config, 1),
                         seed=seed)
  rng = np.random.default_rng(seed + 100)
  for i in range(config.num_layers):
    softplus_a = rng.uniform(0.001, 0.3, size=config.lru)  # log a = -8 r softplus(a_param)
    params[f'recurrent_{i}']['rg_lru']['a_param'] = jnp.asarray(np.log(np.expm1(softplus_a)),
                                                                jnp.float32)
  return model, params, config


def _tokens(seed=0, batch=B, length=T):
  return jnp.asarray(np.random.default_rng(seed).integers(0, V, (batch, length)), jnp.int32)


def _random_carry(config, seed=1, batch=B):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda z: jnp.asarray(rng.normal(size=z.shape), jnp.float32),
                      hawk.init_carry(config, batch))


def _resets():
  reset = np.zeros((B, T), bool)
  reset[0, 6] = True  # inside a chunk below, 1 step before the next one starts
  reset[1, [1, 7]] = True  # inside the first chunk, and at the start of the third
  return jnp.asarray(reset)


_APPLY = {}


def _apply(model):
  """model.apply jitted, one per config, so that tests share their compilations."""
  if model.config not in _APPLY:
    _APPLY[model.config] = jax.jit(lambda params, tokens, carry, reset=None: model.apply(
        {'params': params}, tokens, carry, reset_BxT=reset))
  return _APPLY[model.config]


def _close(a, b, **tol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **tol), a, b)


def test_carry_is_the_whole_state_of_every_layer():
  model, params, config = _model(conv_width=4)
  carry = registry.init_carry(model.config, B)
  assert [{k: v.shape for k, v in c.items()} for c in carry] == \
      [{'conv': (B, 3, 12), 'rg_lru': (B, 12)}] * 2
  logits, new_carry = _apply(model)(params, _tokens(), carry)
  assert logits.shape == (B, T, V) and logits.dtype == jnp.float32
  assert jax.tree.structure(new_carry) == jax.tree.structure(carry)
  _close(jax.tree.map(jnp.shape, new_carry), jax.tree.map(jnp.shape, carry))


def test_associative_scan_equals_sequential_values_and_gradients():
  (seq, params, config), (assoc, _, _) = (_model(scan, num_layers=1) for scan in SCANS)
  tokens, carry, reset = _tokens(), _random_carry(config), _resets()

  def loss(params, carry, model):
    logits, final = model.apply({'params': params}, tokens, carry, reset_BxT=reset)
    return jnp.sum(jnp.sin(logits)) + sum(jnp.sum(c ** 2) for c in jax.tree.leaves(final)), \
        (logits, final)

  grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True), static_argnums=2)
  (value, out), grads = grad(params, carry, seq)
  (value_a, out_a), grads_a = grad(params, carry, assoc)
  np.testing.assert_allclose(value, value_a, rtol=1e-5)
  _close(out, out_a, rtol=1e-5, atol=1e-5)
  _close(grads, grads_a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('scan', SCANS)
def test_chunks_with_carried_state_equal_one_sequence(scan):
  """Chunks of 2 (< conv_width - 1), 5 and 5 steps, conv buffers and RG-LRU state carried,
  with resets inside chunks, at a chunk's start and one step before a chunk (conv buffers
  that straddle a reset). Without resets: the one-token-at-a-time test."""
  model, params, config = _model(scan)
  apply, tokens, carry0, reset = _apply(model), _tokens(), _random_carry(config), _resets()
  logits, final = apply(params, tokens, carry0, reset)
  carry, pieces = carry0, []
  for start, stop in ((0, 2), (2, 7), (7, T)):
    out, carry = apply(params, tokens[:, start:stop], carry, reset[:, start:stop])
    pieces.append(out)
  _close(logits, jnp.concatenate(pieces, axis=1), rtol=1e-5, atol=1e-5)
  _close(final, carry, rtol=1e-5, atol=1e-5)


def test_a_reset_forgets_everything_before_it():
  """With a reset at t, the logits from t on are those of tokens[t:] from any carry with a reset
  at its first step: the RG-LRU state and the conv inputs of the previous document are gone."""
  model, params, config = _model()
  apply, tokens = _apply(model), _tokens()
  reset = jnp.zeros((B, T), bool).at[:, 5].set(True)
  logits, final = apply(params, tokens, _random_carry(config, seed=1), reset)
  suffix, final_suffix = apply(params, tokens[:, 5:], _random_carry(config, seed=2), reset[:, 5:])
  _close(logits[:, 5:], suffix, rtol=1e-5, atol=1e-5)
  _close(final, final_suffix, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('scan', SCANS)
def test_causal_changing_token_t_leaves_earlier_logits_unchanged(scan):
  model, params, config = _model(scan)
  apply, tokens, carry = _apply(model), _tokens(), _random_carry(config)
  changed = tokens.at[:, 6].set((tokens[:, 6] + 1) % V)
  logits, _ = apply(params, tokens, carry)
  logits_changed, _ = apply(params, changed, carry)
  np.testing.assert_array_equal(logits[:, :6], logits_changed[:, :6])
  for t in range(6, 10):  # and it does reach the next steps (through the conv and the RG-LRU)
    assert np.abs(np.asarray(logits[:, t] - logits_changed[:, t])).max() > 1e-4, t


@pytest.mark.parametrize('scan', SCANS)
def test_one_token_at_a_time_with_the_carry_equals_the_full_forward(scan):
  """The sampling path (seqlab.generate): T=1 calls with the carry passed along."""
  model, params, config = _model(scan)
  apply, tokens, carry0 = _apply(model), _tokens(), _random_carry(config)
  logits, final = apply(params, tokens, carry0)
  carry, steps = carry0, []
  for t in range(T):
    out, carry = apply(params, tokens[:, t:t + 1], carry)
    steps.append(out[:, 0])
  _close(logits, jnp.stack(steps, axis=1), rtol=1e-5, atol=1e-5)
  _close(final, carry, rtol=1e-5, atol=1e-5)


# --- An independent float64 implementation, one step at a time, written from the equations of
# the paper (arXiv:2402.19427, section 2.4) and recurrentgemma's layers.py / modules.py.

def _np(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _gelu(x):  # jax.nn.gelu's default (tanh approximation), as the reference uses
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def _rms_norm(x, scale):
  return x / np.sqrt(np.mean(x ** 2, axis=-1, keepdims=True) + 1e-6) * (1 + scale)


def _dense(p, x):
  return x @ p['kernel'] + p['bias']


def numpy_hawk(params, tokens_BxT, carry, reset_BxT, num_layers):
  p, carry = _np(params), [dict(c) for c in _np(carry)]
  width = p['embed'].shape[1]
  tokens_BxT, reset_BxT = np.asarray(tokens_BxT), np.asarray(reset_BxT)
  logits = []
  for t in range(tokens_BxT.shape[1]):
    x = p['embed'][tokens_BxT[:, t]] * np.sqrt(width)  # B x D
    reset = reset_BxT[:, t][:, None]  # B x 1
    for i in range(num_layers):
      rb, c = p[f'recurrent_{i}'], carry[i]
      u = _rms_norm(x, p[f'temporal_pre_norm_{i}']['scale'])
      y = _gelu(_dense(rb['linear_y'], u))
      # Conv1D: a window of the last K inputs; at a reset the previous document's are dropped.
      window = np.concatenate([c['conv'], _dense(rb['linear_x'], u)[:, None]], axis=1)  # BxKxL
      window[:, :-1] *= 1 - reset[:, :, None]
      conv = np.einsum('bkl,kl->bl', window, rb['conv_1d']['w']) + rb['conv_1d']['b']
      c['conv'] = window[:, 1:]
      # RG-LRU.
      lru = rb['rg_lru']
      r = _sigmoid(_dense(lru['a_gate'], conv))
      gate_in = _sigmoid(_dense(lru['input_gate'], conv))
      a = np.exp(-8.0 * r * np.log1p(np.exp(lru['a_param'])))  # sigma(-a_param) ** (8 r)
      multiplier = np.where(reset, 1.0, np.sqrt(1 - a ** 2))
      c['rg_lru'] = np.where(reset, 0.0, a) * c['rg_lru'] + multiplier * (gate_in * conv)
      x = x + _dense(rb['linear_out'], c['rg_lru'] * y)
      # Gated MLP.
      mp = p[f'mlp_{i}']
      u = _rms_norm(x, p[f'channel_pre_norm_{i}']['scale'])
      gate = _gelu(u @ mp['ffw_up_w'][0] + mp['ffw_up_b'][0])
      x = x + _dense(mp['ffw_down'], gate * (u @ mp['ffw_up_w'][1] + mp['ffw_up_b'][1]))
    out = _rms_norm(x, p['final_norm']['scale']) @ p['embed'].T
    logits.append(30.0 * np.tanh(out / 30.0))
  return np.stack(logits, axis=1), tuple(carry)


@pytest.mark.parametrize('scan', SCANS)
def test_matches_numpy_reference_equations(scan):
  model, params, config = _model(scan, seed=3)
  tokens, carry, reset = _tokens(seed=4), _random_carry(config, seed=5), _resets()
  logits, final = _apply(model)(params, tokens, carry, reset)
  ref_logits, ref_final = numpy_hawk(params, tokens, carry, reset, config.num_layers)
  np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-5)
  _close(final, ref_final, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('fields, field', [
    ({'num_layers': 0}, 'num_layers'), ({'width': -1}, 'width'), ({'lru_width': -2}, 'lru_width'),
    ({'conv_width': 0}, 'conv_width'), ({'mlp_expansion': 0}, 'mlp_expansion'),
    ({'width': 8.5}, 'width'), ({'num_layers': True}, 'num_layers'), ({'vocab_size': 0}, 'vocab_size'),
    ({'dropout': 1.0}, 'dropout'), ({'dropout': -0.1}, 'dropout'), ({'scan': 'parallel'}, 'scan'),
])
def test_bad_config_values_are_one_line_errors(fields, field):
  with pytest.raises(SeqlabError) as error:
    hawk.HawkConfig(**{'vocab_size': V, **fields})
  assert f'model.{field}' in str(error.value) and '\n' not in str(error.value)


def test_rg_lru_gradient_is_finite_where_a_is_one():
  """d sqrt(1 - a^2) / da is infinite at a = 1; the reference bounds sqrt's derivative."""
  lru = hawk.RGLRU('sequential')
  x, h = jnp.ones((1, 3, 4)), jnp.ones((1, 4))
  params = random_params(lru.init, x, h)
  params['a_param'] = jnp.full((4,), -30.0)  # softplus(-30) ~ 1e-13: a == 1 in float32

  def loss(params):
    return jnp.sum(lru.apply({'params': params}, x, h)[0])
  grads = jax.jit(jax.grad(loss))(params)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_dropout_takes_a_traced_rate():
  model, params, config = _model()
  tokens, carry = _tokens(), _random_carry(config)
  run = jax.jit(lambda rate, train: model.apply(
      {'params': params}, tokens, carry, train=train, dropout_rate=rate,
      rngs={'dropout': jax.random.PRNGKey(0)})[0], static_argnums=1)
  evaluated = run(jnp.float32(0.5), False)
  _close(run(jnp.float32(0.0), True), evaluated, rtol=1e-6)
  assert np.abs(np.asarray(run(jnp.float32(0.5), True) - evaluated)).max() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize('scan', SCANS)
def test_adam_steps_on_repeating_text_lower_the_loss(scan):
  """The reference's initialisation (init_params), dropout on, 40 Adam steps."""
  config = hawk.HawkConfig(vocab_size=V, num_layers=1, width=16, lru_width=16, dropout=0.1,
                           scan=scan)
  model, params = hawk.HawkLM(config), registry.init_params(config, seed=0)
  text = np.tile(np.arange(V), 8)
  windows = np.stack([text[o:o + 25] for o in (0, 3, 5, 8)])
  inputs, targets = jnp.asarray(windows[:, :-1]), jnp.asarray(windows[:, 1:])
  optimizer = optax.adam(1e-2)

  @jax.jit
  def step(params, opt_state, key):
    def loss_fn(params):
      logits, _ = model.apply({'params': params}, inputs, registry.init_carry(model.config, 4), train=True,
                              rngs={'dropout': key})
      return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state, losses = optimizer.init(params), []
  for i in range(40):
    params, opt_state, loss = step(params, opt_state, jax.random.PRNGKey(i))
    losses.append(float(loss))
  assert np.isfinite(losses).all()
  assert losses[0] > 0.8 * np.log(V) and losses[-1] < 0.3 * losses[0], losses
