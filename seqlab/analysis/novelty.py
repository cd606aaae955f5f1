"""Memorisation vs generalisation: how much of a sample is copied from the training text.

`fraction_in_train(samples, train_ids, n)` is the fraction of the samples'
n-grams (n consecutive symbols) that occur verbatim somewhere in the training
split. Near 1 for n = 30 means the model recites; near 0 means it composes.

N-grams are compared by a 64-bit polynomial hash over symbol ids (vectorised in
NumPy: ~0.1 s per n for a 1M-symbol split). Two different n-grams share a hash
with probability ~2^-64 per pair: about 1e-9 for a million training n-grams and
ten thousand sampled ones, far below the precision these fractions are read at.
"""

import numpy as np

NGRAM_SIZES = (10, 20, 30)
_BASE = np.uint64(1_000_003)


def ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
  """uint64 hash of every n-gram of the 1-D id array (len(ids) - n + 1 of them)."""
  ids = np.asarray(ids).astype(np.uint64) + np.uint64(1)  # so that id 0 still counts
  count = len(ids) - n + 1
  if count <= 0:
    return np.zeros(0, np.uint64)
  hashes = np.zeros(count, np.uint64)
  with np.errstate(over='ignore'):  # arithmetic modulo 2^64 is the point
    for j in range(n):
      hashes = hashes * _BASE + ids[j:j + count]
  return hashes


class TrainingNgrams:
  """The sorted n-gram hashes of a training split, built once per n and queried many times."""

  def __init__(self, train_ids: np.ndarray):
    self._train_ids = np.asarray(train_ids)
    self._tables: dict[int, np.ndarray] = {}

  def _table(self, n: int) -> np.ndarray:
    if n not in self._tables:
      self._tables[n] = np.unique(ngram_hashes(self._train_ids, n))
    return self._tables[n]

  def fraction_in_train(self, samples, n: int) -> float | None:
    """Fraction of the n-grams of `samples` (id arrays) found in training; None if none has n."""
    queries = [ngram_hashes(s, n) for s in samples]
    queries = np.concatenate(queries) if queries else np.zeros(0, np.uint64)
    if not queries.size:
      return None
    table = self._table(n)
    pos = np.minimum(np.searchsorted(table, queries), max(len(table) - 1, 0))
    found = table[pos] == queries if len(table) else np.zeros(len(queries), bool)
    return float(found.mean())

  def report(self, samples, sizes=NGRAM_SIZES) -> dict[str, float | None]:
    """{'10': fraction, '20': ..., '30': ...}: string keys, ready for JSON."""
    return {str(n): self.fraction_in_train(samples, n) for n in sizes}


def fraction_in_train(samples, train_ids: np.ndarray, n: int) -> float | None:
  return TrainingNgrams(train_ids).fraction_in_train(samples, n)
