"""Gated Linear Attention (seqlab.models.gla): the operator and the model against float64 numpy
references written from the paper's equations (arXiv:2312.06635), the two forms equal in values
and gradients, carried state, causality, the sampling path, the declaration."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import random_params
from seqlab.errors import SeqlabError
from seqlab.models import flops
from seqlab.models import gla
from seqlab.models import registry

V, B, T = 11, 2, 12
FORMS = gla.FORMS
CHUNKED = dict(form='chunked', chunk_size=4, sub_chunk_size=2)  # T = 12: 3 chunks of 2 subs


def _config(form='recurrent', **fields):
  """2 layers of width 16, 2 heads (d_k 4, d_v 8), gate rank 3, FFN 24."""
  chunked = CHUNKED if form == 'chunked' else {'form': form}
  return gla.GLAConfig(**{'vocab_size': V, 'num_layers': 2, 'width': 16, 'num_heads': 2,
                          'gate_rank': 3, 'ffn_width': 24, **chunked, **fields})


def _params(config, seed=0):
  """Random parameters (kernels N(0, 1/fan_in), the rest N(0, 0.3^2) + the init's 1 for norm
  scales); the gate bias spread so that alpha ranges over (0.6, 0.999): state is remembered."""
  params = random_params(gla.GLALM(config).init, jnp.zeros((1, 1), jnp.int32),
                         gla.init_carry(config, 1), seed=seed)
  rng = np.random.default_rng(seed + 100)
  for name, leaf in params.items():
    if 'norm' in name:
      params[name] = jax.tree.map(lambda s: 1 + s, leaf)
  for i in range(config.num_layers):
    attn = params[f'attn_{i}']
    attn['head_norm'] = 1 + attn['head_norm']
    attn['gate_up']['bias'] = jnp.asarray(rng.uniform(-6, 6, attn['gate_up']['bias'].shape),
                                          jnp.float32)
  return params


def _tokens(seed=0, batch=B, length=T):
  return jnp.asarray(np.random.default_rng(seed).integers(0, V, (batch, length)), jnp.int32)


def _random_carry(config, seed=1, batch=B):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda z: jnp.asarray(rng.normal(size=z.shape), jnp.float32),
                      gla.init_carry(config, batch))


# XLA's optimisations off (LLVM -O0, as tests/test_conformance.py): these tiny functions compile
# in about half the time, and every check compares float32 numbers within tolerances.
_jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})
_APPLY = {}


def _apply(config):
  """model.apply jitted, one per config, so that tests share their compilations."""
  if config not in _APPLY:
    model = gla.GLALM(config)
    _APPLY[config] = _jit(lambda params, tokens, carry: model.apply({'params': params},
                                                                       tokens, carry))
  return _APPLY[config]


def _close(a, b, **tol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **tol), a, b)


def _close_grads(a, b):
  """Gradients equal to float32 rounding: rtol 1e-4, atol 1e-5 of each leaf's largest value (the
  loss sums squares of a large state: gradients reach 1e3, rounded at 1e-4 there)."""
  jax.tree.map(lambda x, y: np.testing.assert_allclose(
      x, y, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(y).max()))), a, b)


# --- The operator, against the paper's equations in float64 numpy, one token at a time.

def numpy_gla(q, k, v, alpha, S):
  """S_t = diag(alpha_t) S_{t-1} + k_t^T v_t, o_t = q_t S_t (the paper's equations, per head);
  q, k, alpha: B x T x H x K, v: B x T x H x V, S: B x H x K x V."""
  q, k, v, alpha, S = (np.asarray(a, np.float64) for a in (q, k, v, alpha, S))
  o = np.zeros(v.shape)
  for t in range(q.shape[1]):
    S = alpha[:, t, :, :, None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
    o[:, t] = np.einsum('bhk,bhkv->bhv', q[:, t], S)
  return o, S


def _operator_inputs(seed=0, length=13, H=2, K=4, Vd=8, strong=False):
  rng = np.random.default_rng(seed)
  q, k = (rng.normal(size=(B, length, H, K)) for _ in range(2))
  v = rng.normal(size=(B, length, H, Vd))
  logits = rng.normal(size=(B, length, H, K)) * (50 if strong else 3)
  log_a = -np.logaddexp(0, -logits) / (1 if strong else gla.TAU)  # logsigmoid / tau
  S = rng.normal(size=(B, H, K, Vd))
  return tuple(jnp.asarray(a, jnp.float32) for a in (q, k, v, log_a, S))


def _operator(form):
  if form == 'recurrent':
    return gla.gla_recurrent
  chunk, sub = map(int, form.split()[1].split('/'))
  return lambda q, k, v, a, S: gla.gla_chunked(q, k, v, a, S, chunk, sub)


# Chunks of 5 in sub-chunks of 3 (each chunk padded to 2 sub-chunks), of 4 in sub-chunks of 2;
# the slow tier adds one chunk for all 13 tokens, and chunks of 1 token.
_slow = lambda *values: [pytest.param(value, marks=pytest.mark.slow) for value in values]
OPERATOR_FORMS = ['recurrent', 'chunked 5/3', 'chunked 4/2', *_slow('chunked 16/4', 'chunked 1/1')]


@pytest.mark.parametrize('form', OPERATOR_FORMS)
def test_operator_matches_the_papers_equations_in_float64(form):
  """T = 13: not a multiple of any chunk size; a random initial state; moderate and strong
  decays (alpha down to e^-150: exp(-b) of a chunk's cumulative log decay b would overflow,
  the chunked form's products, all exp of a difference <= 0, do not)."""
  operator = _jit(_operator(form))
  for strong in (False, True):
    q, k, v, log_a, S = _operator_inputs(strong=strong)
    o, S_last = operator(q, k, v, log_a, S)
    o_ref, S_ref = numpy_gla(q, k, v, np.exp(np.asarray(log_a, np.float64)), S)
    # float32: 1e-7 of the largest value; 1e-6 with the strong decays, whose cumulative sums
    # (to -2,400 in a chunk of 16) lose digits in b_i - b_j
    for got, want in ((o, o_ref), (S_last, S_ref)):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6 * np.abs(want).max())


@functools.cache
def _operator_grads(form):
  """A loss of the outputs and the final state (T = 13, a random initial state) and its
  gradients with respect to q, k, v, log alpha and the initial state."""
  inputs = _operator_inputs(seed=1)
  rng = np.random.default_rng(2)
  w_o = jnp.asarray(rng.normal(size=inputs[2].shape), jnp.float32)
  w_S = jnp.asarray(rng.normal(size=inputs[4].shape), jnp.float32)

  def loss(*inputs):
    o, S = _operator(form)(*inputs)
    return jnp.sum(o * w_o) + jnp.sum(S * w_S)
  return _jit(jax.value_and_grad(loss, argnums=range(5)))(*inputs)


@pytest.mark.parametrize('form', ['chunked 5/3', *_slow('chunked 4/2', 'chunked 16/4',
                                                         'chunked 1/1')])
def test_operator_forms_agree_in_values_and_gradients_across_chunk_boundaries(form):
  """The chunked form against the recurrent one, from a carried state: the outputs, the final
  state and the gradients of both with respect to every input."""
  value, grads = _operator_grads('recurrent')
  value_c, grads_c = _operator_grads(form)
  np.testing.assert_allclose(value_c, value, rtol=1e-5)
  _close_grads(grads_c, grads)


@pytest.mark.slow
def test_chunked_form_is_finite_with_extreme_decays():
  """log alpha = -80 per step (cumulative sums to -1280 in a chunk of 16): every exponent of the
  chunked form stays <= 0, so no inf, no nan, forward or backward; the state forgets at once."""
  q, k, v, _, S = _operator_inputs(length=20)
  log_a = jnp.full(q.shape, -80.0)

  def loss(log_a, S):
    o, S_last = gla.gla_chunked(q, k, v, log_a, S, 16, 4)
    return jnp.sum(o) + jnp.sum(S_last), (o, S_last)
  (_, (o, S_last)), grads = _jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(log_a, S)
  assert all(np.isfinite(x).all() for x in (o, S_last, *grads))
  np.testing.assert_allclose(o, jnp.einsum('bthk,bthk,bthv->bthv', q, k, v), rtol=1e-5,
                             atol=1e-5)


# --- The model.

def test_carry_is_the_matrix_state_of_every_layer():
  config = _config('chunked')
  carry = registry.init_carry(config, B)
  assert [{k: (v.shape, v.dtype) for k, v in c.items()} for c in carry] == \
      [{'S': ((B, 2, 4, 8), jnp.float32)}] * 2
  logits, new_carry = _apply(config)(_params(config), _tokens(), carry)
  assert logits.shape == (B, T, V) and logits.dtype == jnp.float32
  assert jax.tree.structure(new_carry) == jax.tree.structure(carry)
  _close(jax.tree.map(jnp.shape, new_carry), jax.tree.map(jnp.shape, carry))
  assert registry.state_size(config, 1) == registry.state_size(config, 1000) == 2 * 4 * 8


@pytest.mark.slow
def test_model_forms_agree_in_values_and_gradients():
  """The whole model, recurrent against chunked (chunks of 5 in sub-chunks of 3: T = 12 is not
  a multiple of 5, each chunk padded to whole sub-chunks; the conformance suite compares the
  tiny variant's chunks of 4 in sub-chunks of 2), from a random carry: logits, the final carry,
  and the gradients with respect to every parameter and the carry."""
  configs = [_config('recurrent', num_layers=1),
             _config('chunked', num_layers=1, chunk_size=5, sub_chunk_size=3)]
  params, tokens, carry = _params(configs[0]), _tokens(), _random_carry(configs[0])

  def loss(params, carry, config):
    logits, final = gla.GLALM(config).apply({'params': params}, tokens, carry)
    return jnp.sum(jnp.sin(logits)) + sum(jnp.sum(c ** 2) for c in jax.tree.leaves(final)), \
        (logits, final)
  grad = _jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True), static_argnums=2)
  (value, out), grads = grad(params, carry, configs[0])
  for config in configs[1:]:
    (value_c, out_c), grads_c = grad(params, carry, config)
    np.testing.assert_allclose(value_c, value, rtol=1e-5)
    _close(out_c, out, rtol=1e-5, atol=1e-5)
    _close_grads(grads_c, grads)


@pytest.mark.parametrize('form', ['chunked', *_slow('recurrent')])
def test_chunks_with_carried_state_equal_one_sequence(form):
  """Two calls of 6 tokens (chunks of 4: the second call's chunks start mid-way through the
  first call's grid), the state carried, equal one call on all 12 tokens."""
  config = _config(form)
  apply, params, tokens, carry0 = _apply(config), _params(config), _tokens(), \
      _random_carry(config)
  logits, final = apply(params, tokens, carry0)
  carry, pieces = carry0, []
  for start, stop in ((0, 6), (6, T)):
    out, carry = apply(params, tokens[:, start:stop], carry)
    pieces.append(out)
  _close(jnp.concatenate(pieces, axis=1), logits, rtol=1e-5, atol=1e-5)
  _close(carry, final, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('form', ['chunked', *_slow('recurrent')])
def test_one_token_at_a_time_with_the_carry_equals_the_full_forward(form):
  """The sampling path (seqlab.generate): T = 1 calls with the carry passed along."""
  config = _config(form)
  apply, params, tokens, carry0 = _apply(config), _params(config), _tokens(), \
      _random_carry(config)
  logits, final = apply(params, tokens, carry0)
  carry, steps = carry0, []
  for t in range(T):
    out, carry = apply(params, tokens[:, t:t + 1], carry)
    steps.append(out[:, 0])
  _close(jnp.stack(steps, axis=1), logits, rtol=1e-5, atol=1e-5)
  _close(carry, final, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('form', ['chunked', *_slow('recurrent')])
def test_causal_changing_token_t_leaves_earlier_logits_unchanged(form):
  config = _config(form)
  apply, params, tokens, carry = _apply(config), _params(config), _tokens(), _random_carry(config)
  changed = tokens.at[:, 6].set((tokens[:, 6] + 1) % V)
  logits, _ = apply(params, tokens, carry)
  logits_changed, _ = apply(params, changed, carry)
  np.testing.assert_array_equal(logits[:, :6], logits_changed[:, :6])
  for t in range(6, T):  # and it does reach the later steps (through the state)
    assert np.abs(np.asarray(logits[:, t] - logits_changed[:, t])).max() > 1e-4, t


# --- The model against the paper's GLA Transformer layer (section 4.4), float64 numpy, token
# by token: alpha = sigmoid(x W_a1 W_a2 + b)^(1/tau) taken literally (not in log space).

def _np(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _rms_norm(x, scale, eps=1e-6):
  return x / np.sqrt(np.mean(x ** 2, axis=-1, keepdims=True) + eps) * scale


def _swish(x):
  return x / (1 + np.exp(-x))


def numpy_gla_lm(params, tokens, carry, config):
  p, S = _np(params), [c['S'] for c in _np(carry)]
  H, K, Vd = config.num_heads, config.d_k, config.d_v
  logits = []
  for t in range(tokens.shape[1]):
    x = p['embedding']['embedding'][np.asarray(tokens[:, t])]  # B x D
    for i in range(config.num_layers):
      a, m = p[f'attn_{i}'], p[f'mlp_{i}']
      u = _rms_norm(x, p[f'attn_norm_{i}']['scale'])
      q = (u @ a['q_proj']['kernel']).reshape(B, H, K) / np.sqrt(K)
      k = (u @ a['k_proj']['kernel']).reshape(B, H, K)
      v = (u @ a['v_proj']['kernel']).reshape(B, H, Vd)
      gate = u @ a['gate_down']['kernel'] @ a['gate_up']['kernel'] + a['gate_up']['bias']
      alpha = (1 / (1 + np.exp(-gate))) ** (1 / 16)
      S[i] = alpha.reshape(B, H, K)[..., None] * S[i] + k[..., None] * v[..., None, :]
      o = np.einsum('bhk,bhkv->bhv', q, S[i])  # B x H x d_v
      o = _rms_norm(o, a['head_norm'])  # each head on its own
      r = _swish(u @ a['r_proj']['kernel'] + a['r_proj']['bias'])
      x = x + (o.reshape(B, H * Vd) * r) @ a['o_proj']['kernel']
      u = _rms_norm(x, p[f'mlp_norm_{i}']['scale'])
      ffn = _swish(u @ m['gate_proj']['kernel']) * (u @ m['up_proj']['kernel'])
      x = x + ffn @ m['down_proj']['kernel']
    x = _rms_norm(x, p['norm_f']['scale'])
    head = p['embedding']['embedding'].T if config.tie_embeddings else p['lm_head']['kernel']
    logits.append(x @ head)
  return np.stack(logits, axis=1), tuple({'S': s} for s in S)


@pytest.mark.parametrize('form', ['chunked', *_slow('recurrent')])
def test_model_matches_numpy_reference_of_the_papers_layer(form):
  config = _config(form)
  params, tokens, carry = _params(config, seed=3), _tokens(seed=4), _random_carry(config, seed=5)
  logits, final = _apply(config)(params, tokens, carry)
  ref_logits, ref_final = numpy_gla_lm(params, tokens, carry, config)
  np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-4)
  _close(final, ref_final, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_tied_embeddings_match_the_reference():
  config = _config(tie_embeddings=True, num_layers=1)
  params = _params(config, seed=6)
  assert 'lm_head' not in params
  tokens, carry = _tokens(seed=7, length=4), _random_carry(config, seed=8)
  logits, _ = _apply(config)(params, tokens, carry)
  np.testing.assert_allclose(logits, numpy_gla_lm(params, tokens, carry, config)[0],
                             rtol=1e-4, atol=1e-4)


# --- The declaration and the config.

def test_declared_sizes_parameter_counts_and_matrices():
  """The variant's sizes (parameters counted from shapes, nothing compiled) and `matrices`
  naming every kernel once with its shape, so the FLOP count misses none."""
  variant = registry.variants()['gla'][1]
  counts = {}
  for size, fields in variant.sizes.items():
    config = gla.GLAConfig(vocab_size=65, **fields)
    shapes = jax.eval_shape(gla.GLALM(config).init, jax.random.PRNGKey(0),
                            jnp.zeros((1, 1), jnp.int32), gla.init_carry(config, 1))['params']
    counts[size] = registry.count_params(shapes)
    kernels = {'/'.join(k.key for k in path[:-1]): leaf.shape
               for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)
               if path[-1].key == 'kernel'}
    assert {name: (i, o) for name, i, o in flops.matrices(config)} == kernels
  assert counts == {'tiny': 9088, '0.8M': 834176, '5M': 4820480}, counts
  assert variant.config == {'optim.learning_rate': 2e-3}


def test_extra_flops_count_the_operator_in_either_form():
  config = _config()
  assert flops.per_char(config)['state'] == 3 * 2 * 2 * 5 * 4 * 8
  chunked = flops.per_char(dataclasses.replace(config, **CHUNKED))
  assert chunked['state'] == 3 * 2 * 2 * 4 * 4 * 8
  assert chunked['intra_chunk'] == 3 * 2 * 2 * (2 * 4 * (4 + 8) + 2 * (3 * 4 + 2 * 8))


@pytest.mark.parametrize('fields, field', [
    ({'num_layers': 0}, 'num_layers'), ({'width': -1}, 'width'), ({'num_heads': 0}, 'num_heads'),
    ({'width': 12, 'num_heads': 4}, 'width'), ({'gate_rank': 0}, 'gate_rank'),
    ({'ffn_width': -1}, 'ffn_width'), ({'chunk_size': 0}, 'chunk_size'),
    ({'sub_chunk_size': 0}, 'sub_chunk_size'), ({'width': 8.5}, 'width'),
    ({'num_layers': True}, 'num_layers'), ({'vocab_size': 0}, 'vocab_size'),
    ({'dropout': 1.0}, 'dropout'), ({'form': 'parallel'}, 'form'),
    ({'tie_embeddings': 1}, 'tie_embeddings'), ({'matmul_dtype': 'float16'}, 'matmul_dtype'),
])
def test_bad_config_values_are_one_line_errors(fields, field):
  with pytest.raises(SeqlabError) as error:
    gla.GLAConfig(**{'vocab_size': V, **fields})
  assert f'model.{field}' in str(error.value) and '\n' not in str(error.value)


@pytest.mark.slow
def test_dropout_takes_a_traced_rate():
  config = _config(num_layers=1)
  model, params, tokens, carry = gla.GLALM(config), _params(config), _tokens(), \
      _random_carry(config)
  run = _jit(lambda rate, train: model.apply(
      {'params': params}, tokens, carry, train=train, dropout_rate=rate,
      rngs={'dropout': jax.random.PRNGKey(0)})[0], static_argnums=1)
  evaluated = run(jnp.float32(0.5), False)
  _close(run(jnp.float32(0.0), True), evaluated, rtol=1e-6)
  assert np.abs(np.asarray(run(jnp.float32(0.5), True) - evaluated)).max() > 1e-3


@pytest.mark.slow
def test_adam_steps_on_repeating_text_lower_the_loss():
  """The declared initialisation (registry.init_params), dropout on, 40 Adam steps, in the
  chunked form (the recurrent one computes the same function: the tests above)."""
  config = _config('chunked', num_layers=1, dropout=0.1)
  model, params = gla.GLALM(config), registry.init_params(config, seed=0)
  text = np.tile(np.arange(V), 8)
  windows = np.stack([text[o:o + 25] for o in (0, 3, 5, 8)])
  inputs, targets = jnp.asarray(windows[:, :-1]), jnp.asarray(windows[:, 1:])
  optimizer = optax.adam(1e-2)

  @_jit
  def step(params, opt_state, key):
    def loss_fn(params):
      logits, _ = model.apply({'params': params}, inputs, registry.init_carry(config, 4),
                              train=True, rngs={'dropout': key})
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
