"""`model.matmul_dtype='bfloat16'` for every registered model that has the field.

The rule (seqlab.models.min_rnn: `dense`, `einsum`, `attend`): every matmul takes bf16 inputs
and kernel and returns float32 (fp32 accumulation); the parameters, the carry, the scans, the
norms, the softmax and the logits stay float32. Per model: the logits are near the float32
ones but not equal to them (bf16 really runs), the carry keeps its float32 leaves and its
structure (on the training path and on the one-symbol sampling path), one jitted training
step gives a finite loss and float32 gradients, the parameters are those of float32 (so a run
may switch on resume), and an unknown dtype is one SeqlabError line.

Fast on purpose: tiny one-layer models, random parameters (no compiled init), and one
compilation per model (the float32 forward and the bf16 training step in one jit); every
other check only traces (jax.eval_shape).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import zoo
from conftest import random_params
from seqlab import optim
from seqlab import steps
from seqlab import train
from seqlab.errors import SeqlabError
from seqlab.models import registry

# Every registered variant whose model has a model.matmul_dtype (registry.variants()).
VARIANTS = [variant for variant, (model, _) in registry.variants().items()
            if 'matmul_dtype' in {f.name for f in dataclasses.fields(model.config_class)}]
# The fast tier's one: a model with a window (attention: its q.k and weights.v products in bf16).
FAST_ONE = [pytest.param(v, marks=[] if registry.variants()[v][0].window else pytest.mark.slow)
            for v in VARIANTS]
VOCAB, B, T = 11, 2, 8
# bf16 keeps 8 significant bits: each operand of a matmul is rounded by up to 2^-9 relative,
# so a matmul's result is off by about 2^-8 of its scale, and a few such errors add up
# through the blocks. Measured on these models (smoke widths): 2e-3 to 7e-3 of the largest
# |logit| (one layer with these random parameters, two with registry.init_params'); the
# bound is 2e-2 (about 5 x 2^-8), above that with room, and far below what a wrong matmul
# (a missing term, a swapped operand) gives: O(1) of the scale.
RELATIVE_TOLERANCE = 2e-2


def _configs(variant: str) -> dict:
  """{dtype: model dataclass}: configs/zoo.py:VARIANT,smoke (width 16) with one layer."""
  group = dict(zoo.get_config(f'{variant},smoke').model, num_layers=1)
  if 'context' in group:  # the GPT reads its whole window: the training path (no lax.cond)
    group['context'] = T
  return {dtype: registry.config_of({**group, 'matmul_dtype': dtype}, VOCAB)
          for dtype in ('float32', 'bfloat16')}


def _carry(module):
  """A nonzero carry (>= 0, as minGRU/minLSTM's log-space state must be); the GPT's empty."""
  zeros = registry.init_carry(module.config, B)
  if registry.window(module.config) is not None:
    return zeros
  rng = np.random.default_rng(1)
  return jax.tree.map(lambda z: jnp.asarray(rng.uniform(0, 1, z.shape), z.dtype), zeros)


@functools.lru_cache(maxsize=None)
def _run(variant: str) -> dict:
  """The float32 forward and one bf16 training step (Adam) on the same parameters and carry."""
  modules = {dtype: registry.module_of(config) for dtype, config in _configs(variant).items()}
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, (B, T + 1)), jnp.int32)
  inputs, targets = tokens[:, :-1], tokens[:, 1:]
  params = random_params(modules['float32'].init, inputs, registry.init_carry(modules['float32'].config, B))
  carry = _carry(modules['float32'])
  optimizer = optax.adam(1e-3)

  def loss_fn(params, dtype):
    logits, new_carry = modules[dtype].apply({'params': params}, inputs, carry)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean(), (logits,
                                                                                     new_carry)

  @jax.jit
  def run(params):
    loss32, (logits32, carry32) = loss_fn(params, 'float32')
    (loss16, (logits16, carry16)), grads16 = jax.value_and_grad(
        lambda p: loss_fn(p, 'bfloat16'), has_aux=True)(params)
    updates, _ = optimizer.update(grads16, optimizer.init(params), params)
    return {'loss32': loss32, 'logits32': logits32, 'carry32': carry32, 'loss16': loss16,
            'logits16': logits16, 'carry16': carry16, 'grads16': grads16,
            'params16': optax.apply_updates(params, updates), 'carry_in': carry,
            'params': params}

  return jax.device_get(run(params))


def _dtypes(tree):
  return jax.tree.map(lambda x: jnp.dtype(x.dtype), tree)


@pytest.mark.parametrize('variant', FAST_ONE)  # the others in the slow tier
def test_bf16_logits_are_near_float32_and_not_equal(variant):
  out = _run(variant)
  logits16, logits32 = out['logits16'], out['logits32']
  assert logits16.dtype == logits32.dtype == np.float32
  assert not np.array_equal(logits16, logits32)  # bf16 really runs
  scale = np.abs(logits32).max()
  np.testing.assert_allclose(logits16, logits32, rtol=0, atol=RELATIVE_TOLERANCE * scale)
  np.testing.assert_allclose(out['loss16'], out['loss32'], rtol=RELATIVE_TOLERANCE)


@pytest.mark.slow  # traces the sampling path / a train step of every model
@pytest.mark.parametrize('variant', VARIANTS)
def test_bf16_keeps_the_carry_float32_and_its_structure(variant):
  out = _run(variant)
  config = _configs(variant)['bfloat16']
  module = registry.module_of(config)
  expected = _dtypes(registry.init_carry(module.config, B))  # float32 leaves (and the GPT's int32 positions)
  assert jax.tree.structure(out['carry16']) == jax.tree.structure(expected)
  assert _dtypes(out['carry16']) == expected
  for got, want in zip(jax.tree.leaves(out['carry16']), jax.tree.leaves(out['carry32'])):
    if np.issubdtype(want.dtype, np.floating):
      np.testing.assert_allclose(got, want, rtol=0,
                                 atol=RELATIVE_TOLERANCE * max(np.abs(want).max(), 1e-6))
    else:
      np.testing.assert_array_equal(got, want)

  # The sampling path: one symbol at a time in a lax.scan, whose carry must keep its type
  # (for the GPT, both branches of its lax.cond: appending to the cache and re-reading).
  def sample(params, carry, tokens_BxN):
    def step(carry, token_B):
      logits, carry = module.apply({'params': params}, token_B[:, None], carry)
      return carry, logits
    return jax.lax.scan(step, carry, tokens_BxN.T)

  carry, logits = jax.eval_shape(sample, out['params'], registry.init_carry(module.config, B),
                                 jnp.zeros((B, 3), jnp.int32))
  assert _dtypes(carry) == expected and logits.dtype == jnp.float32


@pytest.mark.slow  # traces the sampling path / a train step of every model
@pytest.mark.parametrize('variant', VARIANTS)
def test_a_bf16_training_step_is_finite_with_float32_gradients(variant):
  out = _run(variant)
  assert np.isfinite(out['loss16'])
  assert _dtypes(out['grads16']) == _dtypes(out['params'])  # all float32
  assert all(np.dtype(g.dtype) == np.float32 and np.isfinite(g).all()
             for g in jax.tree.leaves(out['grads16']))
  assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(out['grads16']))
  assert _dtypes(out['params16']) == _dtypes(out['params'])
  # seqlab's own step (traced only): the state it returns has the types of the one it took.
  config = _configs(variant)['bfloat16']
  optim_config = zoo.get_config(f'{variant},smoke').optim
  schedule = optim.make_schedule(optim_config, 10, 1)
  optimizer = optim.make_optimizer(optim_config, schedule)
  state = jax.eval_shape(lambda: steps.init_state(config, optimizer, B, 0))
  train_step = steps.make_train_step(registry.module_of(config), optimizer, schedule)
  tokens = jax.ShapeDtypeStruct((B, T), jnp.int32)
  new_state, metrics = jax.eval_shape(train_step, state, tokens, tokens, True)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  assert _dtypes(new_state) == _dtypes(state)
  assert metrics['loss'].dtype == jnp.float32


@pytest.mark.parametrize('variant', VARIANTS)
def test_bf16_has_the_parameters_of_float32(variant):
  """Same names, shapes and dtypes (float32): a run may resume with the other dtype."""
  shapes = {dtype: jax.eval_shape(lambda c=config: registry.init_params(c, 0))
            for dtype, config in _configs(variant).items()}
  assert shapes['bfloat16'] == shapes['float32']
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(shapes['bfloat16']))


@pytest.mark.parametrize('variant', VARIANTS)
def test_an_unknown_matmul_dtype_is_one_error(variant, tmp_path):
  message = r"^model.matmul_dtype must be one of \('float32', 'bfloat16'\), got 'float16'$"
  group = dict(zoo.get_config(f'{variant},smoke').model, matmul_dtype='float16')
  with pytest.raises(SeqlabError, match=message):
    registry.config_of(group, VOCAB)
  config = zoo.get_config(f'{variant},smoke')  # what a run checks first, before the data
  config.model.matmul_dtype = 'float16'
  with pytest.raises(SeqlabError, match=message):
    train.build(config, tmp_path / 'run')
