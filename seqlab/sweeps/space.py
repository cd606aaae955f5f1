"""Search spaces: ranges of values, sampled into a sweep's overrides (random or quasi-random).

A distribution says where one config key's values lie: `uniform(low, high)`,
`log_uniform(low, high)` (uniform in log space: learning rates, weight decay),
`integer(low, high)` (both ends included) or `choice(values)`. A sampler turns
distributions into `n` trials, one override dict each, like `axis` does, so they
combine with `product` / `zipped` / `chain`:

    sweeps.product(sweeps.axis('seed', [0, 1]),
                   sweeps.random(8, seed=0, **{'optim.learning_rate': sweeps.log_uniform(1e-4, 1e-2),
                                               'model.dropout': sweeps.uniform(0.0, 0.5)}))

`random` draws i.i.d. points with numpy's `Generator` (PCG64) seeded by `seed`;
`quasi_random` takes the first points of a scrambled Halton sequence (see
`quasi_random`), which covers the space more evenly than i.i.d. points do. Both
map a point of the unit cube to values per key through each distribution's
inverse CDF. The values are plain Python floats and ints: `uniform` and
`log_uniform` round to `digits` significant digits (4 by default), so trial
names stay readable (`learning_rate=0.0003162`); `integer` and `choice` give
exact values. The same `seed` gives the same trials and so the same names: a
search re-run resumes like a grid. A larger `n` with the same seed keeps the
first trials of the smaller one (it reads further along the same sequence).

Axes that change array shapes (hidden size, number of layers) are best declared
as a `choice` of a few values (or an `axis`): trials that share shapes fuse
(`--fused`), while `integer(64, 512)` would give nearly every trial a shape of
its own.

Bad declarations (an empty range or choice, low > high, a log-uniform range
that is not positive, n < 1, a seed that is not an integer) raise SeqlabError
naming the key. Whether a key is a config field is checked by `make_trials`.
numpy is imported only when sampling: `import seqlab.sweeps` stays light.
"""

import dataclasses
import math
import operator
from typing import Any, Callable, Iterable, Mapping

from seqlab.errors import SeqlabError

Overrides = dict[str, Any]
_DRAWS_PER_TRIAL = 1000  # before giving up on finding n distinct trials


def _bad(key: str, what: str) -> SeqlabError:
  return SeqlabError(f'sweep key {key!r}: {what}')


def _real(key: str, name: str, value: Any) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) and \
      type(value).__module__ != 'numpy':
    raise _bad(key, f'{name}={value!r} is not a number')
  try:
    value = float(value)
  except (TypeError, ValueError):
    raise _bad(key, f'{name}={value!r} is not a number') from None
  if not math.isfinite(value):
    raise _bad(key, f'{name}={value!r} is not finite')
  return value


def _significant(value: float, digits: int) -> float:
  return float(f'{value:.{digits}g}')


@dataclasses.dataclass(frozen=True)
class Uniform:
  """Floats uniform in [low, high], rounded to `digits` significant digits."""
  low: float
  high: float
  digits: int = 4
  log = False

  def check(self, key: str) -> int | None:
    """Raises SeqlabError naming `key` if the range is bad; the number of values if finite."""
    name = 'log_uniform' if self.log else 'uniform'
    low, high = _real(key, 'low', self.low), _real(key, 'high', self.high)
    if low > high:
      raise _bad(key, f'{name}({self.low!r}, {self.high!r}) has low > high')
    if low == high:
      raise _bad(key, f'{name}({self.low!r}, {self.high!r}) is an empty range; '
                      'use sweeps.fixed for one value')
    if self.log and low <= 0:
      raise _bad(key, f'log_uniform({self.low!r}, {self.high!r}) needs 0 < low < high '
                      '(its logarithm must exist); use uniform for a range that reaches 0')
    if isinstance(self.digits, bool) or not isinstance(self.digits, int) or self.digits < 1:
      raise _bad(key, f'{name}(digits={self.digits!r}) needs an integer digits >= 1')
    return None

  def value(self, u: float) -> float:
    low, high = float(self.low), float(self.high)
    if self.log:
      x = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    else:
      x = low + u * (high - low)
    return min(max(_significant(x, self.digits), low), high)  # rounding stays in range


class LogUniform(Uniform):
  """Floats whose logarithm is uniform in [log low, log high] (0 < low < high)."""
  log = True


@dataclasses.dataclass(frozen=True)
class Integer:
  """Integers uniform in [low, high], both ends included."""
  low: int
  high: int

  def check(self, key: str) -> int:
    for name, bound in (('low', self.low), ('high', self.high)):
      try:
        if isinstance(bound, bool):
          raise TypeError
        operator.index(bound)
      except TypeError:
        raise _bad(key, f'integer(...) needs integer bounds, got {name}={bound!r}') from None
    if self.low > self.high:
      raise _bad(key, f'integer({self.low!r}, {self.high!r}) has low > high')
    return int(self.high) - int(self.low) + 1

  def value(self, u: float) -> int:
    low, high = int(self.low), int(self.high)
    return min(low + int(u * (high - low + 1)), high)


@dataclasses.dataclass(frozen=True)
class Choice:
  """One of `values`, each equally likely; values are used exactly as given."""
  values: Any

  def check(self, key: str) -> int:
    if isinstance(self.values, (str, bytes)) or not isinstance(self.values, tuple):
      raise _bad(key, f'choice({self.values!r}) needs a list of values')
    if not self.values:
      raise _bad(key, 'choice([]) has no values')
    return len({repr(v) for v in self.values})

  def value(self, u: float) -> Any:
    v = self.values[min(int(u * len(self.values)), len(self.values) - 1)]
    return v.item() if type(v).__module__ == 'numpy' and hasattr(v, 'item') else v


Distribution = Uniform | Integer | Choice


def uniform(low: float, high: float, *, digits: int = 4) -> Uniform:
  """Floats uniform in [low, high] (low < high), rounded to `digits` significant digits."""
  return Uniform(low, high, digits)


def log_uniform(low: float, high: float, *, digits: int = 4) -> LogUniform:
  """Floats uniform in log space over [low, high] (0 < low < high), e.g. learning rates."""
  return LogUniform(low, high, digits)


def integer(low: int, high: int) -> Integer:
  """Integers in [low, high], both included. For a shape (hidden size, layers) prefer a
  `choice` of a few values, so that trials share shapes and fuse."""
  return Integer(low, high)


def choice(values: Iterable[Any]) -> Choice:
  """One of `values`, equally likely, exact. The way to search over shapes (hidden size,
  layers): a few values, so that trials still share shapes and fuse."""
  if isinstance(values, (str, bytes)):
    return Choice(values)  # an error in check(), where the key is known
  try:
    return Choice(tuple(values))
  except TypeError:
    return Choice(values)


def _dimensions(sampler: str, n: Any, seed: Any, space: Mapping[str, Any] | None,
                dims: Mapping[str, Any]) -> tuple[list[tuple[str, Distribution]], int | None]:
  """The validated (key, distribution) pairs, and how many distinct trials the space holds
  (None if a dimension is continuous)."""
  space = dict(space or {})
  for key in dims:
    if key in space:
      raise _bad(key, f'sweeps.{sampler} gets it twice (in the dict and as a keyword)')
  space.update(dims)
  if not space:
    raise SeqlabError(f'sweeps.{sampler}(n={n!r}, seed={seed!r}) has no keys to sample; pass '
                      "them as **{'optim.learning_rate': sweeps.log_uniform(1e-4, 1e-2)}")
  keys = ', '.join(repr(k) for k in space)
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise SeqlabError(f'sweeps.{sampler} over {keys}: n={n!r}; n (the number of trials) must '
                      'be an integer >= 1')
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise SeqlabError(f'sweeps.{sampler} over {keys}: seed={seed!r}; the seed must be an '
                      'integer >= 0 so that the same trials (and names) come back on a re-run')
  pairs, size = [], 1
  for key, dist in space.items():
    if not isinstance(key, str) or not key:
      raise SeqlabError(f'sweeps.{sampler}: key {key!r} is not a dotted config key')
    if not isinstance(dist, (Uniform, Integer, Choice)):
      raise _bad(key, f'{dist!r} is not a distribution; use sweeps.uniform, log_uniform, '
                      'integer or choice (or sweeps.axis for a list of values)')
    count = dist.check(key)
    size = None if size is None or count is None else size * count
    pairs.append((key, dist))
  return pairs, size


def _sample(sampler: str, n: int, seed: int, space, dims,
            points: Callable[[Any, int, int, int], Any]) -> list[Overrides]:
  """The first `n` distinct trials along `points(np, start, count, d)` (an array of points
  of the unit cube): a larger n extends a smaller one."""
  pairs, size = _dimensions(sampler, n, seed, space, dims)
  keys = ', '.join(repr(k) for k, _ in pairs)
  if size is not None and size < n:
    raise SeqlabError(f'sweeps.{sampler} over {keys}: n={n} but the space holds only {size} '
                      'distinct trials; lower n, or use sweeps.product of axes for a grid')
  import numpy as np  # pylint: disable=g-import-not-at-top  (only when sampling)
  trials, seen, drawn = [], set(), 0
  while len(trials) < n:
    if drawn >= _DRAWS_PER_TRIAL * n:
      raise SeqlabError(f'sweeps.{sampler} over {keys}: found only {len(trials)} distinct '
                        f'trials of n={n} in {drawn} draws; lower n or widen the ranges '
                        '(or raise digits=)')
    batch = points(np, drawn, max(n - len(trials), 1), len(pairs))
    drawn += len(batch)
    for point in batch:
      trial = {key: dist.value(float(u)) for (key, dist), u in zip(pairs, point)}
      signature = repr(tuple(trial.values()))
      if signature not in seen:  # rounding (or a finite space) can repeat a trial
        seen.add(signature)
        trials.append(trial)
        if len(trials) == n:
          break
  return trials


def random(n: int, seed: int, space: Mapping[str, Distribution] | None = None,
           **dims: Distribution) -> list[Overrides]:
  """`n` trials drawn i.i.d. from the distributions, with numpy's Generator seeded by `seed`.

  Keys are dotted config keys, passed as `**{'optim.learning_rate': log_uniform(1e-4, 1e-2)}`
  or in the `space` dict (needed for a key named like an argument, e.g. the config's `seed`).
  A trial that repeats an earlier one after rounding is drawn again; the same seed gives the
  same trials, and a larger n the same first trials.
  """
  generator = []  # made on the first draw, so that checks come first

  def points(np, start, count, d):
    del start  # the generator goes on from where it stopped
    if not generator:
      generator.append(np.random.default_rng(seed))
    return generator[0].random((count, d))

  return _sample('random', n, seed, space, dims, points)


def _primes(count: int) -> list[int]:
  primes, k = [], 2
  while len(primes) < count:
    if all(k % p for p in primes if p * p <= k):
      primes.append(k)
    k += 1
  return primes


def _scrambled_halton(np, seed: int, start: int, count: int, d: int):
  """Points start..start+count-1 of the `d`-dimensional Halton sequence (one prime base per
  dimension), each digit position of each dimension passed through its own random permutation
  of the digits (drawn from `seed`), as scipy.stats.qmc.Halton(scramble=True) does. A float
  array of shape (count, d) in [0, 1)."""
  rng = np.random.default_rng(seed)
  points = np.zeros((count, d))
  for j, base in enumerate(_primes(d)):
    num_digits = math.ceil(53 / math.log2(base))  # enough for a float's mantissa
    permutations = np.stack([rng.permutation(base) for _ in range(num_digits)])
    index = np.arange(start, start + count, dtype=np.int64)
    scale = 1.0
    for position in range(num_digits):
      scale /= base
      points[:, j] += permutations[position][index % base] * scale
      index //= base
  return np.minimum(points, 1.0 - 2.0 ** -53)


def quasi_random(n: int, seed: int, space: Mapping[str, Distribution] | None = None,
                 **dims: Distribution) -> list[Overrides]:
  """`n` trials from a low-discrepancy sequence: they cover the space more evenly than
  `random`'s i.i.d. draws, so fewer trials leave fewer gaps.

  The sequence is Halton's (dimension j: the radical inverse of the trial's index in the j-th
  prime base), scrambled by a random permutation of the digits per dimension and digit
  position drawn from `seed` (random digit permutation; the scrambling removes the plain
  sequence's correlations between dimensions and its point at the origin). Keys as in
  `random`; the same seed gives the same trials, and a larger n the same first trials.
  """
  return _sample('quasi_random', n, seed, space, dims,
                 lambda np, start, count, d: _scrambled_halton(np, seed, start, count, d))
