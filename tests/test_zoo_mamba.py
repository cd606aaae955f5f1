"""Mamba (seqlab.models.mamba): the scan forms agree, chunks with the carry, causality, the
sampling path, an independent numpy port of the reference's selective_scan_ref, config errors,
initialisation, dropout and a few training steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import random_params
from seqlab.errors import SeqlabError
from seqlab.models import mamba
from seqlab.models import registry

CFG = dict(vocab_size=11, num_layers=2, width=8, d_state=4, d_conv=4, expand=2)
B, T = 2, 12


def _model(scan='sequential', **overrides):
  return mamba.MambaLM(mamba.MambaConfig(**{**CFG, **overrides, 'scan': scan}))


def _params(model, seed=0):
  tokens = jnp.zeros((B, T), jnp.int32)
  return random_params(model.init, tokens, registry.init_carry(model.config, B), seed=seed)


def _tokens(seed=0, length=T):
  return jnp.asarray(np.random.default_rng(seed).integers(0, CFG['vocab_size'], (B, length)),
                     jnp.int32)


def _random_carry(model, seed=1):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda z: jnp.asarray(rng.normal(size=z.shape), jnp.float32),
                      registry.init_carry(model.config, B))


def _apply(model):
  return jax.jit(lambda params, tokens, carry: model.apply({'params': params}, tokens, carry))


def _close(a, b, tol=1e-5):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol), a, b)


def test_associative_scan_equals_sequential_values_and_gradients():
  seq, assoc = _model('sequential', num_layers=1), _model('associative', num_layers=1)
  params, tokens, carry = _params(seq), _tokens(), _random_carry(seq)
  targets = _tokens(seed=5)

  def loss_fn(model):
    def loss(params, carry):
      logits, new_carry = model.apply({'params': params}, tokens, carry)
      nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
      # The new carry enters the loss too, so the gradient through the final state is checked.
      return nll + sum(jnp.sum(jnp.sin(c)) for c in jax.tree.leaves(new_carry)), (logits,
                                                                                  new_carry)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))

  (loss_s, aux_s), grads_s = loss_fn(seq)(params, carry)
  (loss_a, aux_a), grads_a = loss_fn(assoc)(params, carry)
  _close(loss_s, loss_a)
  _close(aux_s, aux_a)
  _close(grads_s, grads_a, tol=1e-4)
  assert float(sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(grads_s))) > 0


@pytest.mark.parametrize('scan', mamba.SCANS)
def test_chunks_with_carried_state_equal_one_long_sequence(scan):
  model = _model(scan)
  params, tokens, carry0 = _params(model), _tokens(), _random_carry(model)
  apply = jax.jit(lambda p, x, c: model.apply({'params': p}, x, c))
  whole, carry_whole = apply(params, tokens, carry0)
  logits, carry = [], carry0
  for start, stop in ((0, 2), (2, 7), (7, T)):  # a chunk of 2 < d_conv - 1 carries old inputs
    carry_at_7 = carry
    chunk_logits, carry = apply(params, tokens[:, start:stop], carry)
    logits.append(chunk_logits)
  _close(jnp.concatenate(logits, axis=1), whole)
  _close(carry, carry_whole)
  # The conv state is part of the carry: dropping it (zeros) changes the next chunk's logits.
  no_conv = tuple({**c, 'conv': jnp.zeros_like(c['conv'])} for c in carry_at_7)
  assert not np.allclose(apply(params, tokens[:, 7:], no_conv)[0], whole[:, 7:], atol=1e-4)


def test_causal():
  model = _model()
  params, tokens = _params(model), _tokens()
  apply = _apply(model)
  logits, _ = apply(params, tokens, registry.init_carry(model.config, B))
  t = 6
  changed = tokens.at[:, t].set((tokens[:, t] + 1) % CFG['vocab_size'])
  logits2, _ = apply(params, changed, registry.init_carry(model.config, B))
  np.testing.assert_array_equal(logits[:, :t], logits2[:, :t])
  assert not np.allclose(logits[:, t:], logits2[:, t:])


def test_one_token_at_a_time_equals_the_full_forward():
  model = _model()
  params, tokens, carry0 = _params(model), _tokens(), _random_carry(model)
  whole, carry_whole = _apply(model)(params, tokens, carry0)

  def step(carry, token_B):  # the sampling path: T = 1 with the carry, in one scan
    logits_Bx1xV, carry = model.apply({'params': params}, token_B[:, None], carry)
    return carry, logits_Bx1xV[:, 0]
  carry, logits_TxBxV = jax.jit(lambda c, x: jax.lax.scan(step, c, x))(carry0, tokens.T)
  _close(jnp.swapaxes(logits_TxBxV, 0, 1), whole)
  _close(carry, carry_whole)


def _softplus(x):
  return np.logaddexp(0.0, x)


def _silu(x):
  return x / (1.0 + np.exp(-x))


def selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, prev_state):
  """A float64 numpy port of mamba_ssm.ops.selective_scan_interface.selective_scan_ref (real A,
  variable B and C of shape (batch, N, L), delta_softplus=True), in its (batch, dim, L) layout."""
  delta = _softplus(delta + delta_bias[..., None])
  x = prev_state.copy()
  deltaA = np.exp(np.einsum('bdl,dn->bdln', delta, A))
  deltaB_u = np.einsum('bdl,bnl,bdl->bdln', delta, B, u)
  ys = []
  for i in range(u.shape[2]):
    x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
    ys.append(np.einsum('bdn,bn->bd', x, C[:, :, i]))
  out = np.stack(ys, axis=2) + u * D[:, None]
  return out * _silu(z), x


def numpy_mixer(p, config, u_BxTxD, carry):
  """mamba_simple.Mamba's non-fused forward in float64 numpy, continuing `carry`."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
  u = np.asarray(u_BxTxD, np.float64)
  conv_state = np.asarray(carry['conv'], np.float64)
  ssm_state = np.asarray(carry['ssm'], np.float64)
  E, N, R, K = config.d_inner, config.d_state, config.rank, config.d_conv
  xz = u @ p['in_proj']['kernel']
  x, z = xz[..., :E], xz[..., E:]
  padded = np.concatenate([conv_state, x], axis=1)  # the carried inputs instead of zero padding
  w, bias = p['conv1d']['kernel'], p['conv1d']['bias']
  conv = np.stack([bias + sum(w[k] * padded[:, t + k] for k in range(K))
                   for t in range(x.shape[1])], axis=1)
  x = _silu(conv)
  x_dbl = x @ p['x_proj']['kernel']
  dt, Bm, Cm = x_dbl[..., :R], x_dbl[..., R:R + N], x_dbl[..., R + N:]
  dt = dt @ p['dt_proj']['kernel']  # the bias is added inside the scan, as the reference does
  to_bdl = lambda a: np.transpose(a, (0, 2, 1))
  y, last = selective_scan_ref(to_bdl(x), to_bdl(dt), -np.exp(p['A_log']), to_bdl(Bm),
                               to_bdl(Cm), p['D'], to_bdl(z), p['dt_proj']['bias'], ssm_state)
  return to_bdl(y) @ p['out_proj']['kernel'], {'conv': padded[:, -(K - 1):], 'ssm': last}


@pytest.mark.parametrize('scan', mamba.SCANS)
def test_mixer_matches_a_numpy_port_of_selective_scan_ref(scan):
  config = mamba.MambaConfig(**CFG, scan=scan)
  mixer = mamba.MambaMixer(config)
  u = jnp.asarray(np.random.default_rng(3).normal(size=(B, T, config.width)), jnp.float32)
  carry = _random_carry(_model(scan))[0]  # layer 0's
  params = random_params(mixer.init, u, carry, seed=2)
  out, new_carry = jax.jit(lambda p, u, c: mixer.apply({'params': p}, u, c))(params, u, carry)
  want_out, want_carry = numpy_mixer(params, config, u, carry)
  _close(out, want_out, tol=1e-4)
  _close(new_carry, want_carry, tol=1e-4)


def test_model_matches_numpy_blocks():
  """MixerModel + the tied LM head: x += mixer(RMSNorm(x)) per layer, RMSNorm_f, x E^T."""
  model = _model()
  params, tokens, carry = _params(model), _tokens(), _random_carry(model)
  logits, new_carry = _apply(model)(params, tokens, carry)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  rms_norm = lambda x, scale: x / np.sqrt(np.mean(x ** 2, -1, keepdims=True) + 1e-5) * scale
  x = p['embedding']['embedding'][np.asarray(tokens)]
  want_carry = []
  for i in range(model.config.num_layers):
    out, layer_carry = numpy_mixer(p[f'mixer_{i}'], model.config,
                                   rms_norm(x, p[f'norm_{i}']['scale']), carry[i])
    x = x + out
    want_carry.append(layer_carry)
  want = rms_norm(x, p['norm_f']['scale']) @ p['embedding']['embedding'].T
  _close(logits, want, tol=1e-4)
  _close(new_carry, tuple(want_carry), tol=1e-4)


@pytest.mark.parametrize('overrides', [
    dict(vocab_size=0), dict(num_layers=0), dict(width=-1), dict(d_state=0), dict(d_conv=0),
    dict(expand=0), dict(dt_rank=-1), dict(width=2.5), dict(d_state=True), dict(dropout=1.0),
    dict(dropout=-0.1), dict(dropout='0.1'), dict(scan='parallel')])
def test_bad_config_is_a_one_line_error(overrides):
  with pytest.raises(SeqlabError) as error:
    mamba.MambaConfig(**{**CFG, **overrides})
  assert '\n' not in str(error.value) and 'model.' in str(error.value)


def test_config_defaults_and_init():
  config = mamba.MambaConfig(vocab_size=5, num_layers=1, width=40)
  assert (config.d_inner, config.rank, config.d_state, config.d_conv) == (80, 3, 16, 4)
  assert mamba.MambaConfig(vocab_size=5, width=40, dt_rank=7).rank == 7
  params = registry.init_params(config, seed=0)
  mixer = params['mixer_0']
  dt = jax.nn.softplus(mixer['dt_proj']['bias'])
  assert float(dt.min()) >= mamba.DT_MIN * 0.999 and float(dt.max()) <= mamba.DT_MAX * 1.001
  np.testing.assert_allclose(mixer['A_log'], np.log(np.tile(np.arange(1, 17), (80, 1))),
                             rtol=1e-6)
  np.testing.assert_array_equal(mixer['D'], 1.0)
  assert float(jnp.abs(mixer['dt_proj']['kernel']).max()) <= 3 ** -0.5
  assert float(jnp.abs(mixer['out_proj']['kernel']).max()) <= 80 ** -0.5  # / sqrt(num_layers)
  assert 'decoder' not in params  # tied: the logits use the embedding


def test_dropout_with_a_traced_rate():
  model = _model()
  params, tokens, carry = _params(model), _tokens(), registry.init_carry(model.config, B)

  @jax.jit
  def train_logits(rate, key):
    return model.apply({'params': params}, tokens, carry, train=True, dropout_rate=rate,
                       rngs={'dropout': key})[0]
  key = jax.random.PRNGKey(0)
  eval_logits, _ = _apply(model)(params, tokens, carry)
  _close(train_logits(0.0, key), eval_logits)
  dropped = train_logits(0.5, key)
  assert not np.allclose(dropped, eval_logits, atol=1e-4)
  np.testing.assert_array_equal(dropped, train_logits(0.5, key))


@pytest.mark.slow  # about 5 s, mostly compiling the train step
def test_adam_steps_lower_the_loss():
  text = np.array([0, 1, 2, 3, 1, 2, 0, 3] * 8)
  model = _model(num_layers=1, width=16, vocab_size=4)
  tokens = jnp.asarray(np.stack([text[:-1], np.roll(text, 3)[:-1]]), jnp.int32)
  targets = jnp.asarray(np.stack([text[1:], np.roll(text, 3)[1:]]), jnp.int32)
  params = registry.init_params(model.config, seed=0)
  optimizer = optax.adam(1e-2)

  def loss_fn(params):
    logits, _ = model.apply({'params': params}, tokens, registry.init_carry(model.config, 2))
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

  @jax.jit
  def train_step(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss
  opt_state = optimizer.init(params)
  losses = []
  for _ in range(30):
    params, opt_state, loss = train_step(params, opt_state)
    losses.append(float(loss))
  assert np.isfinite(losses).all()
  assert losses[-1] < 0.7 * losses[0], losses
