"""Search spaces (seqlab.sweeps.space): ranges sampled into trials, random and quasi-random.

Fast: nothing trains. The samplers are exercised through the public API (`seqlab.sweeps`).
"""

import numpy as np
import pytest

from conftest import write_sweep_config
from configs import shakespeare
from seqlab import sweeps
from seqlab.errors import SeqlabError
from seqlab.sweeps import declare
from seqlab.sweeps import handoff

SAMPLERS = [sweeps.random, sweeps.quasi_random]
LR = 'optim.learning_rate'


def _column(trials, key):
  return [t[key] for t in trials]


@pytest.mark.parametrize('sampler', SAMPLERS, ids=lambda s: s.__name__)
def test_distributions_stay_in_range_with_plain_values(sampler):
  trials = sampler(300, 1, **{'a': sweeps.uniform(-1.0, 2.0), 'b': sweeps.log_uniform(1e-5, 1e-1),
                              'c': sweeps.integer(3, 7), 'd': sweeps.choice(['lstm', 'gru', 64])})
  assert len(trials) == 300 and all(list(t) == ['a', 'b', 'c', 'd'] for t in trials)
  a, b, c, d = (_column(trials, k) for k in 'abcd')
  assert all(type(v) is float and -1.0 <= v <= 2.0 for v in a)  # not numpy scalars
  assert all(type(v) is float and 1e-5 <= v <= 1e-1 for v in b)
  assert all(float(f'{v:.4g}') == v for v in a + b)  # 4 significant digits
  assert all(type(v) is int for v in c) and set(c) == {3, 4, 5, 6, 7}  # both ends included
  assert set(map(repr, d)) == {"'lstm'", "'gru'", '64'} and type(d[d.index(64)]) is int
  assert len({tuple(t.values()) for t in trials}) == 300  # no trial repeats
  # Coarser rounding when asked; the ends of a range are reachable and never overshot.
  coarse = _column(sampler(39, 0, x=sweeps.uniform(0.12345, 0.5, digits=2)), 'x')
  assert set(coarse) == {0.12345, *(k / 100 for k in range(13, 51))}  # 0.12 would be below


@pytest.mark.parametrize('sampler', SAMPLERS, ids=lambda s: s.__name__)
def test_samplers_are_reproducible_from_the_seed_and_differ_across_seeds(sampler):
  space = {LR: sweeps.log_uniform(1e-4, 1e-2), 'model.dropout': sweeps.uniform(0.0, 0.5),
           'model.hidden_size': sweeps.choice([16, 32])}
  first = sampler(8, 3, **space)
  assert sampler(8, 3, **space) == first
  assert sampler(8, 4, **space) != first
  assert _column(sampler(8, 4, **space), LR) != _column(first, LR)
  # A larger n with the same seed keeps the first trials: a grown search resumes the smaller.
  assert sampler(20, 3, **space)[:8] == first
  # The `space` dict takes keys named like the sampler's arguments (the config's `seed`).
  seeded = sampler(4, 3, {'seed': sweeps.integer(0, 10_000)}, **{LR: space[LR]})
  assert all(list(t) == ['seed', LR] and type(t['seed']) is int for t in seeded)


def test_log_uniform_is_uniform_in_log_space():
  values = np.array(_column(sweeps.random(2000, 0, x=sweeps.log_uniform(1e-4, 1e-2)), 'x'))
  logs = np.log10(values)
  probs = np.linspace(0.05, 0.95, 19)
  # log10 is uniform on [-4, -2]: its p-quantile is -4 + 2p (standard error ~0.02 here).
  np.testing.assert_allclose(np.quantile(logs, probs), -4 + 2 * probs, atol=0.06)
  # ... whereas the values themselves are far from uniform: most lie below the middle.
  assert np.mean(values < (1e-4 + 1e-2) / 2) > 0.8
  # And uniform() is uniform in linear space.
  linear = np.array(_column(sweeps.random(2000, 0, x=sweeps.uniform(0.0, 1.0)), 'x'))
  np.testing.assert_allclose(np.quantile(linear, probs), probs, atol=0.03)


def _unit_square(sampler, seed, n=64):
  trials = sampler(n, seed, x=sweeps.uniform(0.0, 1.0), y=sweeps.uniform(0.0, 1.0))
  return np.array([[t['x'], t['y']] for t in trials])


def _empty_cells(points, k=8):
  cells = np.minimum((points * k).astype(int), k - 1)
  return k * k - len({tuple(c) for c in cells})


def _star_discrepancy(points, k=32):
  """max |fraction of points in [0,a)x[0,b) - ab| over a k x k grid of corners (a, b)."""
  grid = np.arange(1, k + 1) / k
  inside = (points[:, 0, None, None] < grid[None, :, None]) & \
      (points[:, 1, None, None] < grid[None, None, :])
  return np.max(np.abs(inside.mean(axis=0) - grid[:, None] * grid[None, :]))


def test_quasi_random_covers_the_square_more_evenly_than_random():
  random_empty = [_empty_cells(_unit_square(sweeps.random, s)) for s in range(20)]
  random_star = [_star_discrepancy(_unit_square(sweeps.random, s)) for s in range(20)]
  for seed in range(5):
    quasi = _unit_square(sweeps.quasi_random, seed)
    assert _empty_cells(quasi) < np.median(random_empty), (seed, random_empty)
    assert _star_discrepancy(quasi) < np.median(random_star), (seed, random_star)
  # 64 = 2**6 points of the base-2 dimension: exactly one in each 1/64 of [0, 1).
  x = _unit_square(sweeps.quasi_random, 7)[:, 0]
  assert sorted(np.floor(x * 64).astype(int)) == list(range(64))


def test_trial_names_are_reproducible_and_unique():
  base = shakespeare.get_config('smoke')

  def names():
    declared = sweeps.product(
        sweeps.axis('seed', [0, 1]),
        sweeps.quasi_random(6, 0, **{LR: sweeps.log_uniform(1e-4, 1e-2),
                                     'model.dropout': sweeps.uniform(0.0, 0.5)}),
        sweeps.random(2, 9, **{'model.hidden_size': sweeps.choice([16, 32])}))
    return [t.name for t in declare.make_trials(base, declared)]

  first = names()
  assert first == names() and len(set(first)) == len(first) == 24
  assert all(n.startswith(('seed=0,learning_rate=', 'seed=1,learning_rate=')) for n in first)
  assert all(len(n) < 80 for n in first), first  # 4 significant digits keep them short


def test_a_search_declared_in_a_config_file_gives_the_same_trials_on_every_load(tmp_path):
  path = write_sweep_config(tmp_path, tmp_path / 'unused.txt', '''sweep.product(
      sweep.axis('seed', [0, 1]),
      __import__('seqlab').sweeps.random(3, seed=0, **{'optim.learning_rate':
          __import__('seqlab').sweeps.log_uniform(1e-4, 1e-2)}))''')
  loads = [declare.declared_in(str(path)) for _ in range(2)]  # each load runs the file again
  assert loads[0] == loads[1] and len(loads[0]) == 6


def test_make_trials_puts_the_sampled_values_into_the_configs(tmp_path):
  base = shakespeare.get_config('smoke')
  declared = sweeps.product(
      sweeps.axis('seed', [0, 1]),
      sweeps.random(4, seed=0, **{LR: sweeps.log_uniform(1e-4, 1e-2),
                                  'model.dropout': sweeps.uniform(0.0, 0.5),
                                  'model.num_layers': sweeps.integer(1, 3),
                                  'model.cell': sweeps.choice(['lstm', 'gru'])}))
  trials = declare.make_trials(base, declared)
  assert len(trials) == 8 and [t.overrides for t in trials] == declared
  for trial in trials:
    config = trial.config
    assert config.seed == trial.overrides['seed']
    assert config.optim.learning_rate == trial.overrides[LR]
    assert config.model.dropout == trial.overrides['model.dropout']
    assert config.model.num_layers == trial.overrides['model.num_layers']
    assert config.model.cell == trial.overrides['model.cell']
    # What a trial's process gets (JSON) holds the same values and name.
    back = handoff.read_trial(handoff.write_trial(tmp_path, trial))
    assert back.name == trial.name and back.overrides == trial.overrides
    assert back.config.optim.learning_rate == trial.overrides[LR]
  assert base.optim.learning_rate not in {t.overrides[LR] for t in trials}  # base unchanged


def _space(dist):
  return {'model.dropout': dist}


BAD_SPACES = [  # (distribution, what the message says)
    (sweeps.uniform(0.5, 0.5), 'empty range'),
    (sweeps.uniform(0.5, 0.1), 'low > high'),
    (sweeps.uniform(0.0, float('inf')), 'not finite'),
    (sweeps.uniform('a', 1.0), 'not a number'),
    (sweeps.uniform(0.0, 1.0, digits=0), 'digits'),
    (sweeps.log_uniform(0.0, 1e-2), 'needs 0 < low < high'),
    (sweeps.log_uniform(-1.0, 1.0), 'needs 0 < low < high'),
    (sweeps.log_uniform(1e-2, 1e-4), 'low > high'),
    (sweeps.integer(4, 2), 'low > high'),
    (sweeps.integer(1.5, 3), 'integer bounds'),
    (sweeps.choice([]), 'no values'),
    (sweeps.choice('abc'), 'list of values'),
    ([0.1, 0.2], 'not a distribution'),
]


def _one_line_error(fn, *needles):
  with pytest.raises(SeqlabError) as info:
    fn()
  message = str(info.value)
  assert '\n' not in message and all(n in message for n in needles), message
  return message


@pytest.mark.parametrize('sampler', SAMPLERS, ids=lambda s: s.__name__)
@pytest.mark.parametrize('dist,what', BAD_SPACES, ids=[w for _, w in BAD_SPACES])
def test_a_bad_range_is_one_error_line_naming_the_key(sampler, dist, what):
  space = {LR: sweeps.log_uniform(1e-4, 1e-2), **_space(dist)}
  _one_line_error(lambda: sampler(4, 0, **space), "'model.dropout'", what)


@pytest.mark.parametrize('sampler', SAMPLERS, ids=lambda s: s.__name__)
def test_bad_sampler_arguments_are_one_error_line_naming_the_keys(sampler):
  space = {LR: sweeps.log_uniform(1e-4, 1e-2)}
  for n in (0, -1, 2.5, True):
    _one_line_error(lambda: sampler(n, 0, **space), repr(LR), f'n={n!r}')
  for seed in (None, -1, 1.5):
    _one_line_error(lambda: sampler(4, seed, **space), repr(LR), 'seed')
  _one_line_error(lambda: sampler(4, 0), 'no keys')
  _one_line_error(lambda: sampler(4, 0, {LR: space[LR]}, **space), repr(LR), 'twice')
  # A finite space smaller than n, and one too small to give n distinct trials once rounded.
  _one_line_error(lambda: sampler(5, 0, **{'model.cell': sweeps.choice(['lstm', 'gru'])}),
                  "'model.cell'", 'only 2 distinct')
  _one_line_error(lambda: sampler(7, 0, x=sweeps.uniform(0.5, 1.0, digits=1)), "'x'",
                  'distinct trials')


def test_a_key_that_is_not_a_config_field_is_one_error_line_naming_it():
  base = shakespeare.get_config('smoke')
  sample = lambda key: sweeps.random(2, 0, **{key: sweeps.uniform(0.0, 0.5)})
  _one_line_error(lambda: declare.make_trials(base, sample('model.dropuot')),
                  "unknown config key 'model.dropuot'", "did you mean 'model.dropout'")
  _one_line_error(lambda: declare.make_trials(base, sample('modle.dropout')),
                  "'modle.dropout'", "did you mean 'model.dropout'")
  _one_line_error(lambda: declare.make_trials(base, sample('model.dropout.x')),
                  "'model.dropout.x'")
  _one_line_error(lambda: declare.make_trials(base, sweeps.axis('optim', [{'a': 1}])),
                  "'optim' is a group of the config, not a field")
  _one_line_error(lambda: declare.make_trials(base, sweeps.axis('model.hidden_size', [2.5])),
                  'model.hidden_size=2.5')
  _one_line_error(lambda: sweeps.axis('model.dropout', []), "'model.dropout'", 'no values')
