"""The LRU (seqlab.models.lru): a float64 numpy reference written from the paper's equations
(arXiv:2303.06349, section 3 and its appendix A pseudo-code) for the layer and the whole model
on shared weights, both scan forms, the ring initialisation and gamma, the carry, the sampling
path, causality, config errors, the FLOP matrices, and (slow) bf16 and a short training."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import random_params
from seqlab.errors import SeqlabError
from seqlab.models import lru
from seqlab.models import registry

V, B, T = 11, 2, 12
SCANS = lru.SCANS


def _config(scan='sequential', **fields):
  return lru.LRUConfig(**{'vocab_size': V, 'num_layers': 2, 'width': 8, 'state': 6,
                          'scan': scan, **fields})


@functools.cache
def _params(seed=0):
  """Random parameters (no compiled init) with |lambda| spread over [0.5, 0.99] and phases over
  [0, pi] (so that the state is remembered and rotates), gamma_log free of lambda, LayerNorm
  scales near 1."""
  config = _config()
  params = random_params(lru.LRULM(config).init, jnp.zeros((1, 1), jnp.int32),
                         lru.init_carry(config, 1), seed=seed)
  rng = np.random.default_rng(seed + 100)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  for i in range(config.num_layers):
    layer, N = params[f'layers_{i}'], config.n
    layer['seq']['nu_log'] = f32(np.log(-np.log(rng.uniform(0.5, 0.99, N))))
    layer['seq']['theta_log'] = f32(np.log(rng.uniform(0.01, np.pi, N)))
    layer['seq']['gamma_log'] = f32(rng.uniform(-1.5, 0.0, N))
    layer['normalization']['scale'] = f32(1 + 0.2 * rng.normal(size=config.width))
  params['norm']['scale'] = f32(1 + 0.2 * rng.normal(size=config.width))
  return params


def _tokens(seed=0, length=T):
  return jnp.asarray(np.random.default_rng(seed).integers(0, V, (B, length)), jnp.int32)


def _random_carry(config, seed=1):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda z: jnp.asarray(rng.normal(size=z.shape), jnp.float32),
                      lru.init_carry(config, B))


CHANGED_AT = 6


@functools.cache
def _probe() -> dict:
  """Every forward the fast checks read, in one compiled function (host arrays): both scan
  forms from a random carry with every module's output; the sequential form on tokens changed
  at CHANGED_AT; one token at a time (a lax.scan of T = 1 calls, the sampling path)."""
  params, tokens = _params(), _tokens(seed=4)
  carry = _random_carry(_config(), seed=5)
  changed = tokens.at[:, CHANGED_AT].set((tokens[:, CHANGED_AT] + 1) % V)
  model = lru.LRULM(_config())

  @jax.jit
  def probe(params, tokens, changed, carry):
    full = [lru.LRULM(_config(scan)).apply({'params': params}, tokens, carry,
                                            capture_intermediates=True, mutable=['intermediates'])
            for scan in SCANS]
    step = lambda carry, token_B: model.apply({'params': params}, token_B[:, None], carry)[::-1]
    carry_steps, logits_steps = jax.lax.scan(step, carry, tokens.T)
    return {'full': full, 'changed': model.apply({'params': params}, changed, carry)[0],
            'steps': jnp.swapaxes(logits_steps[:, :, 0], 0, 1), 'carry_steps': carry_steps}

  return {**jax.device_get(probe(params, tokens, changed, carry)), 'params': params,
          'tokens': tokens, 'carry': carry}


def _close(a, b, **tol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **tol), a, b)


# --- An independent float64 implementation, one step at a time, written from the paper's
# equations: lambda = exp(-exp(nu) + i exp(theta)), gamma = exp(gamma_log),
# h_t = lambda h_{t-1} + gamma (B u_t), y_t = Re(C h_t) + D u_t, and the blocks of
# NicolasZucchet/minimal-LRU's SequenceLayer (prenorm LayerNorm, GELU, GLU, residual).

def _np(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _gelu(x):  # nn.gelu (the tanh approximation), as the reference's
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def _layer_norm(x, p):
  mean = x.mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + 1e-6) * p['scale'] + \
      p['bias']


def _dense(p, x):
  return x @ p['kernel'] + p['bias']


def numpy_lru_step(p, u_BxH, h_BxN):
  """One step of the LRU layer in complex128: (y_BxH, h_BxN)."""
  lam = np.exp(-np.exp(p['nu_log']) + 1j * np.exp(p['theta_log']))
  B_c, C_c = p['B_re'] + 1j * p['B_im'], p['C_re'] + 1j * p['C_im']
  h_BxN = lam * h_BxN + np.exp(p['gamma_log']) * (u_BxH @ B_c.T)
  return (h_BxN @ C_c.T).real + p['D'] * u_BxH, h_BxN


def numpy_lru(p, u_BxTxH, h_BxN):
  ys, hs = [], []
  for t in range(u_BxTxH.shape[1]):
    y, h_BxN = numpy_lru_step(p, u_BxTxH[:, t], h_BxN)
    ys.append(y)
    hs.append(h_BxN)
  return np.stack(ys, 1), np.stack(hs, 1)


def numpy_lru_lm(params, tokens_BxT, carry):
  p = _np(params)
  h = [c['h_re'] + 1j * c['h_im'] for c in _np(carry)]
  logits = []
  for t in range(tokens_BxT.shape[1]):
    x = p['encoder']['kernel'][np.asarray(tokens_BxT)[:, t]] + p['encoder']['bias']
    for i in range(len(h)):
      lp = p[f'layers_{i}']
      y, h[i] = numpy_lru_step(lp['seq'], _layer_norm(x, lp['normalization']), h[i])
      g = _gelu(y)
      x = x + _dense(lp['out1'], g) * _sigmoid(_dense(lp['out2'], g))
    logits.append(_dense(p['decoder'], _layer_norm(x, p['norm'])))
  return np.stack(logits, 1), tuple({'h_re': c.real, 'h_im': c.imag} for c in h)


def test_matches_the_float64_reference_layer_and_model():
  """Both scan forms (one compiled function) against the reference, from a random carry: the
  logits and final carry of the model, and each LRU layer alone on the input it was given."""
  out = _probe()
  params, carry = out['params'], out['carry']
  ref_logits, ref_final = numpy_lru_lm(params, out['tokens'], carry)
  for scan, ((logits, final), state) in zip(SCANS, out['full']):
    config = _config(scan)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-5, err_msg=scan)
    _close(final, ref_final, rtol=1e-4, atol=1e-5)
    inter = state['intermediates']
    for i in range(config.num_layers):
      u = np.asarray(inter[f'layers_{i}']['normalization']['__call__'][0], np.float64)
      y_ref, h_ref = numpy_lru(_np(params)[f'layers_{i}']['seq'], u,
                               np.asarray(carry[i]['h_re'], np.float64) + 1j * carry[i]['h_im'])
      y, layer_final = inter[f'layers_{i}']['seq']['__call__'][0]
      np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5, err_msg=scan)
      _close(layer_final, {'h_re': h_ref[:, -1].real, 'h_im': h_ref[:, -1].imag}, rtol=1e-5,
             atol=1e-5)
      # seqlab.neurons' states: Re h of every unit after each step, of the first sequence.
      recorded = registry.recorded_states(config, inter)[i]
      assert recorded[:2] == (i, 'h') and registry.neuron_states(config) == {'h': config.n}
      np.testing.assert_allclose(recorded[2], h_ref[0].real, rtol=1e-5, atol=1e-5)


def test_carry_is_the_complex_state_as_two_float32_parts():
  config = _config()
  carry = registry.init_carry(config, B)
  assert [{k: (v.shape, v.dtype) for k, v in c.items()} for c in carry] == \
      [{'h_re': ((B, 6), jnp.float32), 'h_im': ((B, 6), jnp.float32)}] * 2
  assert all(not np.any(leaf) for leaf in jax.tree.leaves(carry))
  # 2 N: real and imaginary parts, whatever the context
  assert [registry.state_size(config, tokens) for tokens in (1, 4096)] == [12, 12]
  logits, final = jax.eval_shape(lambda p, t, c: lru.LRULM(config).apply({'params': p}, t, c),
                                 _params(), _tokens(), carry)
  assert logits.shape == (B, T, V) and logits.dtype == jnp.float32
  assert jax.tree.map(lambda x: (x.shape, x.dtype), final) == \
      jax.tree.map(lambda x: (x.shape, x.dtype), carry)


def test_one_token_at_a_time_with_the_carry_equals_the_full_forward():
  """The sampling path (seqlab.generate), and so any chunking: T = 1 calls, carry passed on."""
  out = _probe()
  (logits, final), _ = out['full'][0]
  _close(out['steps'], logits, rtol=1e-5, atol=1e-5)
  _close(out['carry_steps'], final, rtol=1e-5, atol=1e-5)


def test_causal_changing_token_t_leaves_earlier_logits_unchanged():
  out = _probe()
  (logits, _), _ = out['full'][0]
  np.testing.assert_array_equal(out['changed'][:, :CHANGED_AT], logits[:, :CHANGED_AT])
  for t in range(CHANGED_AT, T):  # and it reaches every later step (through the recurrence)
    assert np.abs(out['changed'][:, t] - logits[:, t]).max() > 1e-4, t


RINGS = ((0.9, 0.999, 6.28), (0.0, 1.0, np.pi / 10))  # the defaults; the reference's disc


@functools.cache
def _ring_inits():
  """The LRU layer's initial parameters at each ring (width 32, 8,192 units), one compilation."""
  configs = [lru.LRUConfig(vocab_size=V, num_layers=1, width=32, state=8192, r_min=r_min,
                           r_max=r_max, max_phase=max_phase) for r_min, r_max, max_phase in RINGS]
  u, carry = jnp.zeros((1, 1, 32)), lru.init_carry(configs[0], 1)[0]
  init = jax.jit(lambda key: [lru.LRU(c).init(key, u, carry)['params'] for c in configs])
  return configs, jax.device_get(init(jax.random.PRNGKey(0)))


@pytest.mark.parametrize('ring', range(len(RINGS)), ids=[str(r) for r in RINGS])
def test_ring_initialisation_gamma_and_matrix_stds(ring):
  """|lambda| uniform by area on [r_min, r_max], phase uniform on [0, max_phase], gamma =
  sqrt(1 - |lambda|^2), B ~ N(0, 1/(2H)), C ~ N(0, 1/N), D ~ N(0, 1); finite at the whole
  disc (the reference's defaults r_min = 0, r_max = 1)."""
  configs, inits = _ring_inits()
  config, p = configs[ring], inits[ring]
  r_min, r_max, max_phase = RINGS[ring]
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(p))
  nu, theta = np.asarray(p['nu_log'], np.float64), np.asarray(p['theta_log'], np.float64)
  radius, phase = np.exp(-np.exp(nu)), np.exp(theta)
  assert radius.min() >= r_min - 1e-6 and radius.max() <= r_max + 1e-7 and radius.max() < 1
  assert phase.min() >= 0 and phase.max() <= max_phase * (1 + 1e-6)
  # Uniform by area: |lambda|^2 uniform on [r_min^2, r_max^2]; phase uniform on [0, max_phase]
  # (Kolmogorov-Smirnov distance of 8,192 draws: 0.018 = 1.63 / sqrt(n) is p = 0.01).
  for values, low, high in ((radius ** 2, r_min ** 2, r_max ** 2), (phase, 0.0, max_phase)):
    cdf = np.clip((np.sort(values) - low) / (high - low), 0, 1)
    ks = np.abs(cdf - np.arange(1, cdf.size + 1) / cdf.size).max()
    assert ks < 0.018, (ks, low, high)
  np.testing.assert_allclose(np.exp(p['gamma_log']), np.sqrt(1 - radius ** 2), rtol=1e-5)
  H, N = config.width, config.n
  assert p['B_re'].shape == (N, H) and p['C_re'].shape == (H, N) and p['D'].shape == (H,)
  for name, std in (('B_re', 1 / np.sqrt(2 * H)), ('B_im', 1 / np.sqrt(2 * H)),
                    ('C_re', 1 / np.sqrt(N)), ('C_im', 1 / np.sqrt(N)), ('D', 1.0)):
    tol = 0.35 if name == 'D' else 0.02  # 32 draws of D; 262,144 of each matrix
    assert abs(np.std(p[name]) / std - 1) < tol and abs(np.mean(p[name])) < tol * std, name
  assert not np.allclose(p['B_re'], p['B_im']) and not np.allclose(p['C_re'], p['C_im'])


def test_the_init_is_finite_at_the_ends_of_the_uniform_draws():
  """u = 0 and the largest float32 u below 1 (1 - 2^-23): the reference's nu_init gives
  log(-0.5 log 1) = -inf at r_max = 1 and +inf at u = 0 with r_min = 0, its theta_init
  log 0 = -inf at u = 0; here |lambda| stays inside (0, 1) and the phase in (0, max_phase)."""
  u = jnp.asarray([0.0, 2.0 ** -23, 0.5, 1 - 2.0 ** -22, 1 - 2.0 ** -23], jnp.float32)
  for r_min, r_max in ((0.0, 1.0), (0.9, 1.0), (0.9, 0.999), (0.5, 0.5)):
    nu = np.asarray(lru.nu_log_of_uniform(u, r_min, r_max), np.float64)
    radius2 = np.exp(-2 * np.exp(nu))
    assert np.isfinite(nu).all() and (radius2 < 1).all() and (radius2 > 0).all(), (r_min, r_max)
    expected = r_min ** 2 + np.asarray(u, np.float64) * (r_max ** 2 - r_min ** 2)
    np.testing.assert_allclose(radius2, expected, rtol=1e-6, atol=1e-7)
    gamma = np.exp(np.asarray(lru.gamma_log_of(jnp.asarray(nu, jnp.float32)), np.float64))
    assert np.isfinite(gamma).all() and (gamma > 0).all()
  theta = np.asarray(lru.theta_log_of_uniform(u, 0.1), np.float64)
  assert np.isfinite(theta).all()
  floor = np.finfo(np.float32).tiny
  np.testing.assert_allclose(np.exp(theta), 0.1 * np.maximum(np.asarray(u), floor), rtol=1e-5)


@pytest.mark.parametrize('fields, field', [
    ({'num_layers': 0}, 'num_layers'), ({'width': -1}, 'width'), ({'state': -2}, 'state'),
    ({'width': 8.5}, 'width'), ({'num_layers': True}, 'num_layers'),
    ({'vocab_size': 0}, 'vocab_size'),
    ({'r_min': -0.1}, 'r_min'), ({'r_min': 1.0}, 'r_min'), ({'r_max': 0.5}, 'r_max'),
    ({'r_max': 1.01}, 'r_max'), ({'r_min': float('nan')}, 'r_min'), ({'r_max': '1'}, 'r_max'),
    ({'max_phase': 0.0}, 'max_phase'), ({'max_phase': float('inf')}, 'max_phase'),
    ({'dropout': 1.0}, 'dropout'), ({'dropout': -0.1}, 'dropout'), ({'scan': 'parallel'}, 'scan'),
    ({'matmul_dtype': 'float16'}, 'matmul_dtype'),
])
def test_bad_config_values_are_one_line_errors(fields, field):
  with pytest.raises(SeqlabError) as error:
    lru.LRUConfig(**{'vocab_size': V, **fields})
  assert f'model.{field}' in str(error.value) and '\n' not in str(error.value)


def test_the_declared_matrices_are_the_matmul_weights_and_the_sizes_their_counts():
  config = _config()
  params = _params()
  # B_re, B_im (N x H) and C_re, C_im (H x N); the GLU's out1, out2; the decoder.
  layer = params['layers_0']
  kernels = 2 * layer['seq']['B_re'].size + 2 * layer['seq']['C_re'].size + \
      layer['out1']['kernel'].size + layer['out2']['kernel'].size
  matrices = registry.of(config).matrices(config)
  assert sum(i * o for _, i, o in matrices) == \
      config.num_layers * kernels + params['decoder']['kernel'].size
  assert registry.describe(config) == '2x8 lru (state 6 complex)'
  zoo = registry.config_of(registry.group_of('lru', '0.8M'), vocab_size=65)  # traced only
  assert registry.count_params(jax.eval_shape(lambda: registry.init_params(zoo, 0))) == 809_445


@pytest.mark.slow
def test_dropout_is_one_mask_per_sequence_and_unit_shared_over_time():
  """The reference's broadcast_dims=[0]: where the dropout after the GLU zeroes a unit of a
  sequence, that unit's update is zero at every step of the call (and only there); a traced
  rate (the conformance suite checks the rest of the contract)."""
  config = _config(num_layers=1)
  layer = lru.SequenceLayer(config)
  x = jax.random.normal(jax.random.PRNGKey(1), (B, T, config.width))
  update = jax.jit(lambda params, rate: layer.apply(
      {'params': params}, x, _random_carry(config)[0], train=True, rate=rate,
      rngs={'dropout': jax.random.PRNGKey(2)})[0] - x)
  zeroed = np.asarray(update(_params()['layers_0'], jnp.float32(0.5))) == 0  # B x T x H
  assert zeroed.any() and not zeroed.all()
  assert (zeroed.all(axis=1) == zeroed.any(axis=1)).all()


@pytest.mark.slow
def test_bf16_matmuls_keep_the_carry_and_parameters_float32():
  config, params = _config(), _params()
  config16 = _config(matmul_dtype='bfloat16')
  tokens, carry = _tokens(), _random_carry(config)

  @jax.jit
  def run(params):
    def loss(params):
      out16 = lru.LRULM(config16).apply({'params': params}, tokens, carry)
      return jnp.mean(out16[0] ** 2), out16
    return lru.LRULM(config).apply({'params': params}, tokens, carry), \
        jax.grad(loss, has_aux=True)(params)
  (logits32, carry32), (grads, (logits16, carry16)) = run(params)
  assert logits16.dtype == jnp.float32 and not np.array_equal(logits16, logits32)
  np.testing.assert_allclose(logits16, logits32, atol=2e-2 * np.abs(logits32).max())
  assert jax.tree.map(lambda x: x.dtype, carry16) == jax.tree.map(lambda x: x.dtype, carry32)
  assert all(g.dtype == jnp.float32 and np.isfinite(g).all() for g in jax.tree.leaves(grads))


@pytest.mark.slow
def test_adam_steps_on_repeating_text_lower_the_loss():
  """The reference's initialisation (init_params), dropout on, 40 Adam steps."""
  config = lru.LRUConfig(vocab_size=V, num_layers=1, width=16, dropout=0.1)
  model, params = lru.LRULM(config), registry.init_params(config, seed=0)
  text = np.tile(np.arange(V), 8)
  windows = np.stack([text[o:o + 25] for o in (0, 3, 5, 8)])
  inputs, targets = jnp.asarray(windows[:, :-1]), jnp.asarray(windows[:, 1:])
  optimizer = optax.adam(1e-2)

  @jax.jit
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
