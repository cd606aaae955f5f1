"""Golden values of every zoo model (tests/fixtures/golden_models.*, made by
tests/fixtures/make_golden.py from the commit its JSON records): the parameter paths, the
parameters at seed 0 and the logits and final carry of the stored parameters on a fixed input
are what that commit computed. Only the registry's public functions are used."""

import functools
import json
import pathlib

import jax
import numpy as np
import pytest

from seqlab.models import registry

FIXTURES = pathlib.Path(__file__).parent / 'fixtures'
GOLDEN = json.loads((FIXTURES / 'golden_models.json').read_text())['variants']
ARRAYS = dict(np.load(FIXTURES / 'golden_models.npz'))


def _config(variant: str):
  record = GOLDEN[variant]
  return registry.config_of(record['model'], vocab_size=record['vocab_size'])


@functools.cache
def _fresh_params(variant: str):
  return registry.init_params(_config(variant), seed=0)


def _paths(tree) -> list[str]:
  return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _stored(variant: str, kind: str, like):
  """The stored leaves `{variant}/{kind}{keystr}` in the tree structure of `like`."""
  leaves = [ARRAYS[f'{variant}/{kind}{path}'] for path in _paths(like)]
  return jax.tree.unflatten(jax.tree.structure(like), leaves)


@pytest.mark.parametrize('variant', list(GOLDEN))
def test_param_paths(variant):
  assert sorted(_paths(_fresh_params(variant))) == GOLDEN[variant]['param_paths']


@pytest.mark.slow  # a compiled init per model: the fast tier keeps the paths and the logits
@pytest.mark.parametrize('variant', list(GOLDEN))
def test_init_params_bit_for_bit(variant):
  # Equal bit for bit on a CPU: the initialisers draw and scale random numbers, no matmuls.
  fresh = _fresh_params(variant)
  assert sorted(_paths(fresh)) == GOLDEN[variant]['param_paths']
  for path, leaf in zip(_paths(fresh), jax.tree.leaves(fresh)):
    stored = ARRAYS[f'{variant}/params{path}']
    assert leaf.dtype == stored.dtype, path
    np.testing.assert_array_equal(np.asarray(leaf), stored, err_msg=f'{variant} {path}')


@pytest.mark.parametrize('variant', list(GOLDEN))
def test_logits_and_carry_of_stored_params(variant):
  """The stored parameters on the stored tokens: the stored logits and final carry."""
  record, cfg = GOLDEN[variant], _config(variant)
  shapes = jax.eval_shape(lambda: registry.init_params(cfg, seed=0))  # the tree, not the values
  assert sorted(_paths(shapes)) == record['param_paths']
  params = _stored(variant, 'params', shapes)
  tokens = np.asarray(record['tokens'], np.int32)
  logits, carry = registry.module_of(cfg).apply(
      {'params': params}, tokens, registry.init_carry(cfg, tokens.shape[0]))
  np.testing.assert_allclose(np.asarray(logits), ARRAYS[f'{variant}/logits'], rtol=1e-6,
                             atol=1e-6)
  assert str(jax.tree.structure(carry)) == record['carry_structure']
  stored_paths = sorted(k[len(f'{variant}/carry'):] for k in ARRAYS
                        if k.startswith(f'{variant}/carry'))
  assert sorted(_paths(carry)) == stored_paths
  for path, leaf in zip(_paths(carry), jax.tree.leaves(carry)):
    stored = ARRAYS[f'{variant}/carry{path}']
    assert leaf.dtype == stored.dtype and leaf.shape == stored.shape, path
    np.testing.assert_allclose(np.asarray(leaf), stored, rtol=1e-6, atol=1e-6,
                               err_msg=f'{variant} carry{path}')
