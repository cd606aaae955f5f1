"""GPT (seqlab.models.gpt): a numpy reference of nanoGPT's equations, the KV cache (token by
token, in chunks, past the window, rows at different positions), causality, config errors,
nanoGPT's parameter count and init, dropout, and a short training."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import random_params
from seqlab.errors import SeqlabError
from seqlab.models import gpt
from seqlab.models import registry

VOCAB = 11


def _config(bias=True, **fields):
  fields = {'num_layers': 2, 'num_heads': 2, 'width': 8, 'context': 8, 'dropout': 0.0,
            **fields}
  return gpt.GPTConfig(vocab_size=VOCAB, bias=bias, **fields)


@functools.lru_cache(maxsize=None)
def _params(config, seed=0):
  model = gpt.GPTLM(config)
  return {'params': random_params(model.init, jnp.zeros((1, 1), jnp.int32),
                                  registry.init_carry(model.config, 1), seed=seed)}


@functools.lru_cache(maxsize=None)
def _apply(config):
  return jax.jit(gpt.GPTLM(config).apply)


def _tokens(batch, length, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, VOCAB, (batch, length)), jnp.int32)


def _close(actual, expected, atol=1e-5):
  np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-5, atol=atol)


# (1) The forward from the empty cache against nanoGPT's equations, in float64.
def _layer_norm(x, p):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-5) * p['scale'] + p.get('bias', 0.0)


def _linear(x, p):
  return x @ p['kernel'] + p.get('bias', 0.0)


def numpy_gpt(params, tokens_BxT, config):
  """nanoGPT's GPT.forward (eval mode), with targets: logits at every position."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params['params'])
  tokens_BxT = np.asarray(tokens_BxT)
  (B, T), H, D = tokens_BxT.shape, config.num_heads, config.width
  erf = np.vectorize(math.erf)
  x = p['wte']['embedding'][tokens_BxT] + p['wpe']['embedding'][np.arange(T)]
  for i in range(config.num_layers):
    block = p[f'h_{i}']
    q, k, v = np.split(_linear(_layer_norm(x, block['ln_1']), block['c_attn']), 3, axis=-1)
    q, k, v = (a.reshape(B, T, H, D // H).transpose(0, 2, 1, 3) for a in (q, k, v))
    att = q @ k.transpose(0, 1, 3, 2) / math.sqrt(D // H)
    att = np.where(np.tril(np.ones((T, T), bool)), att, -np.inf)
    att = np.exp(att - att.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, D)
    x = x + _linear(y, block['attn_c_proj'])
    h = _linear(_layer_norm(x, block['ln_2']), block['c_fc'])
    x = x + _linear(0.5 * h * (1 + erf(h / math.sqrt(2))), block['mlp_c_proj'])
  return _layer_norm(x, p['ln_f']) @ p['wte']['embedding'].T


@pytest.mark.parametrize('bias', [True, False])
def test_forward_equals_numpy_nanogpt(bias):
  config = _config(bias)
  params, tokens = _params(config), _tokens(3, 8)
  assert ('bias' in params['params']['h_0']['c_attn']) == bias
  assert ('bias' in params['params']['ln_f']) == bias
  for length in (8, 5):  # the whole window (no cond) and part of it (the append branch)
    logits, carry = _apply(config)(params, tokens[:, :length], gpt.init_carry(config, 3))
    assert logits.dtype == jnp.float32 and logits.shape == (3, length, VOCAB)
    _close(logits, numpy_gpt(params, tokens[:, :length], config))
    np.testing.assert_array_equal(carry['pos'], [length] * 3)
    np.testing.assert_array_equal(carry['tokens'][:, :length], tokens[:, :length])


# (2) The KV cache: token by token, or in uneven chunks, is the whole forward.
@pytest.mark.parametrize('chunks', [[1] * 8, [3, 1, 4]])
def test_cache_equals_whole_forward(chunks):
  config = _config()
  params, tokens = _params(config), _tokens(3, 8)
  whole, whole_carry = _apply(config)(params, tokens, gpt.init_carry(config, 3))
  carry, pieces, start = gpt.init_carry(config, 3), [], 0
  for size in chunks:
    logits, carry = _apply(config)(params, tokens[:, start:start + size], carry)
    pieces.append(logits)
    start += size
  _close(jnp.concatenate(pieces, axis=1), whole)
  np.testing.assert_array_equal(carry['pos'], whole_carry['pos'])
  np.testing.assert_array_equal(carry['tokens'], whole_carry['tokens'])
  for got, want in zip(jax.tree.leaves(carry['layers']), jax.tree.leaves(whole_carry['layers'])):
    _close(got, want)


# (3) Causality: a later token changes nothing before it.
def test_causal():
  config = _config()
  params, tokens = _params(config), _tokens(3, 8)
  changed = tokens.at[:, 5].set((tokens[:, 5] + 1) % VOCAB)
  logits, _ = _apply(config)(params, tokens, gpt.init_carry(config, 3))
  logits_changed, _ = _apply(config)(params, changed, gpt.init_carry(config, 3))
  np.testing.assert_array_equal(logits_changed[:, :5], logits[:, :5])
  assert np.all(np.abs(logits_changed[:, 5] - logits[:, 5]).max(axis=-1) > 1e-4)


# (4) Past the window: a jitted scan of one-token calls conditions every logit on the last
# `context` tokens, read at positions 0..context-1 (nanoGPT's generate: idx[:, -block_size:]).
def test_scan_past_the_window_rereads_last_context_tokens():
  config = _config()
  model, params, tokens = gpt.GPTLM(config), _params(config), _tokens(2, 20)

  @jax.jit
  def scan_logits(params, tokens_BxT):
    def step(carry, token_B):
      logits, carry = model.apply(params, token_B[:, None], carry)
      return carry, logits[:, 0]
    carry, logits_TxBxV = jax.lax.scan(step, registry.init_carry(model.config, 2), tokens_BxT.T)
    return jnp.swapaxes(logits_TxBxV, 0, 1), carry

  logits, carry = scan_logits(params, tokens)
  first, _ = _apply(config)(params, tokens[:, :8], registry.init_carry(model.config, 2))
  _close(logits[:, :8], first)
  # The windows ending at t = 8..19, all in one batch: row (t - 8) * 2 + b.
  windows = jnp.stack([tokens[:, t - 7:t + 1] for t in range(8, 20)]).reshape(-1, 8)
  fresh, _ = _apply(config)(params, windows, registry.init_carry(model.config, 24))
  _close(logits[:, 8:], fresh[:, -1].reshape(12, 2, VOCAB).swapaxes(0, 1))
  np.testing.assert_array_equal(carry['pos'], [8, 8])
  np.testing.assert_array_equal(carry['tokens'], tokens[:, 12:])


def test_rows_at_different_positions():
  """Row 1 is full, rows 0 and 2 are not: one call serves each as if alone, for one token
  and for a chunk that overflows row 1 (its window: the last 8 tokens; the chunk's earlier
  tokens see the window from its start)."""
  config = _config()
  params, tokens, apply = _params(config), _tokens(3, 12), _apply(config)
  after5, after8 = (apply(params, tokens[:, :n], gpt.init_carry(config, 3))[1] for n in (5, 8))
  mixed = jax.tree.map(lambda a, b: a.at[1].set(b[1]), after5, after8)
  step = jnp.stack([tokens[0, 5], tokens[1, 8], tokens[2, 5]])[:, None]
  logits, carry = apply(params, step, mixed)
  first8, _ = apply(params, tokens[:, :8], gpt.init_carry(config, 3))
  shifted, _ = apply(params, tokens[:, 1:9], gpt.init_carry(config, 3))
  rows = np.array([0, 2])
  _close(logits[rows, 0], first8[rows, 5])
  _close(logits[1, 0], shifted[1, -1])
  np.testing.assert_array_equal(carry['pos'], [6, 8, 6])

  chunk = jnp.stack([tokens[0, 5:8], tokens[1, 8:11], tokens[2, 5:8]])
  logits, carry = apply(params, chunk, mixed)
  last8, _ = apply(params, tokens[:, 3:11], gpt.init_carry(config, 3))
  _close(logits[rows], first8[rows, 5:8])
  _close(logits[1], last8[1, -3:])
  np.testing.assert_array_equal(carry['pos'], [8, 8, 8])
  np.testing.assert_array_equal(carry['tokens'][1], tokens[1, 3:11])


# (5) Config errors: one line that names the field.
@pytest.mark.parametrize('fields, words', [
    ({'width': 10, 'num_heads': 3}, 'model.width (10) must be a multiple of model.num_heads'),
    ({'num_layers': 0}, 'model.num_layers'),
    ({'num_heads': 0}, 'model.num_heads'),
    ({'width': 0}, 'model.width'),
    ({'context': 0}, 'model.context'),
    ({'vocab_size': 0}, 'model.vocab_size'),
    ({'context': 2.5}, 'model.context'),
    ({'dropout': 1.0}, 'model.dropout'),
    ({'dropout': -0.1}, 'model.dropout'),
    ({'bias': 'no'}, 'model.bias'),
])
def test_bad_config_is_one_line_error(fields, words):
  with pytest.raises(SeqlabError) as raised:
    gpt.GPTConfig(**{'vocab_size': VOCAB, **fields})
  assert words in str(raised.value) and '\n' not in str(raised.value)


def test_longer_than_context_is_an_error():
  config = _config()
  model = gpt.GPTLM(config)
  with pytest.raises(SeqlabError, match='model.context=8') as raised:
    jax.eval_shape(model.apply, _params(config), jnp.zeros((2, 9), jnp.int32),
                   registry.init_carry(model.config, 2))
  assert '\n' not in str(raised.value)


def test_config_fields():
  config = gpt.GPTConfig.from_config({'num_layers': 2, 'width': 12, 'num_heads': 3,
                                      'hidden_size': 99}, vocab_size=5)
  assert (config.head_dim, config.vocab_size, config.context, config.dropout) == (4, 5, 256, 0.2)
  assert registry.window(config) == 256
  carry = gpt.init_carry(config, 4)
  assert carry['pos'].shape == (4,) and carry['tokens'].shape == (4, 256)
  assert [(c['k'].shape, c['v'].shape) for c in carry['layers']] == [((4, 256, 3, 4),) * 2] * 2


# (6) nanoGPT's shakespeare_char baby GPT: "number of parameters: 10.65M" (without wpe).
def test_baby_gpt_parameter_count():
  config = gpt.GPTConfig(vocab_size=65)  # the defaults are the baby GPT
  model = gpt.GPTLM(config)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32),
                          registry.init_carry(model.config, 1))['params']
  total = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))
  # d = 384, L = 6, no biases. Per block 12 d^2 + 2d = 1,770,240 (c_attn 3d^2, attn c_proj
  # d^2, c_fc 4d^2, mlp c_proj 4d^2, ln_1 and ln_2 scales d each); x 6 = 10,621,440; ln_f
  # 384; wte 65 x 384 = 24,960 (also the output layer); wpe 256 x 384 = 98,304.
  assert total == 10_745_088
  assert total - 256 * 384 == 10_646_784  # get_num_params(non_embedding=True): 10.65M
  assert f'{(total - 256 * 384) / 1e6:.2f}M' == '10.65M'


@pytest.mark.slow
def test_init_follows_nanogpt():
  config = gpt.GPTConfig(vocab_size=65, num_layers=2, num_heads=4, width=64, context=32,
                         bias=True)
  params = registry.init_params(config, seed=0)
  block = params['h_1']
  stds = {'c_attn': (block['c_attn']['kernel'], 0.02), 'c_fc': (block['c_fc']['kernel'], 0.02),
          'attn_c_proj': (block['attn_c_proj']['kernel'], 0.01),  # 0.02 / sqrt(2 L)
          'mlp_c_proj': (block['mlp_c_proj']['kernel'], 0.01),
          'wte': (params['wte']['embedding'], 0.02), 'wpe': (params['wpe']['embedding'], 0.02)}
  for name, (value, std) in stds.items():
    assert abs(float(jnp.std(value)) / std - 1) < 0.1, name
    assert abs(float(jnp.mean(value))) < 0.2 * std, name
  for name in ('c_attn', 'attn_c_proj', 'c_fc', 'mlp_c_proj', 'ln_1', 'ln_2'):
    np.testing.assert_array_equal(block[name]['bias'], 0.0)
  np.testing.assert_array_equal(params['ln_f']['scale'], 1.0)


# (7) Dropout only when training; the rate may be traced; rate 0 keeps every unit.
@pytest.mark.slow  # 5 s
def test_dropout():
  config = _config(dropout=0.2)
  model, params, tokens = gpt.GPTLM(config), _params(config), _tokens(3, 8)
  carry = registry.init_carry(model.config, 3)

  @jax.jit
  def variants(rate, key, other):  # one compilation; `rate` is traced
    run = lambda key, **kw: model.apply(params, tokens, carry, rngs={'dropout': key}, **kw)[0]
    return {'eval': run(key, train=False, dropout_rate=rate),
            'zero': run(key, train=True, dropout_rate=0 * rate),
            'key': run(key, train=True, dropout_rate=rate),
            'other': run(other, train=True, dropout_rate=rate),
            'config': run(key, train=True)}  # config.dropout

  out = variants(0.5, jax.random.PRNGKey(0), jax.random.PRNGKey(1))
  eval_logits = _apply(config)(params, tokens, carry)[0]
  _close(out['eval'], eval_logits, atol=1e-6)
  _close(out['zero'], eval_logits, atol=1e-6)
  assert np.abs(out['key'] - eval_logits).max() > 1e-2
  assert np.abs(out['key'] - out['other']).max() > 1e-2
  assert np.abs(out['config'] - eval_logits).max() > 1e-3  # config.dropout = 0.2
  assert np.abs(out['config'] - out['key']).max() > 1e-3


# (8) A few AdamW steps memorise a batch of random tokens (from nanoGPT's init).
@pytest.mark.slow  # 6 s
def test_adamw_lowers_the_loss():
  config = gpt.GPTConfig(vocab_size=VOCAB, num_layers=2, num_heads=4, width=32, context=16,
                         dropout=0.0)
  model, params = gpt.GPTLM(config), registry.init_params(config, seed=0)
  tokens = _tokens(8, 13, seed=5)
  inputs, targets = tokens[:, :-1], tokens[:, 1:]  # 12 < context: the cond's append branch
  carry = registry.init_carry(model.config, 8)
  optimizer = optax.adamw(3e-3, weight_decay=0.1)

  @jax.jit
  def step(params, opt_state):
    def loss_fn(params):
      logits, _ = model.apply({'params': params}, inputs, carry, train=True)
      return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state, losses = optimizer.init(params), []
  for _ in range(40):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  assert abs(losses[0] - math.log(VOCAB)) < 0.1, losses[0]  # near-uniform at nanoGPT's init
  assert np.isfinite(losses).all() and losses[-1] < 0.35 * losses[0], losses[::10]
