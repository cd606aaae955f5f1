"""Novelty: the fraction of sampled n-grams found verbatim in the training split."""

import json

import numpy as np
import pytest

from seqlab.analysis import novelty


def _brute_force(samples, train, n):
  seen = {tuple(train[i:i + n]) for i in range(len(train) - n + 1)}
  grams = [tuple(s[i:i + n]) for s in samples for i in range(len(s) - n + 1)]
  return sum(g in seen for g in grams) / len(grams) if grams else None


def test_fraction_on_a_constructed_example():
  train = np.arange(100) % 37  # 0..36, 0..36, 0..25
  copied = train[5:25]  # 20 symbols straight from training: all of its 10-grams are there
  novel = np.array([1, 0] * 10)  # '1 0' never occurs in training (it counts upwards)
  ngrams = novelty.TrainingNgrams(train)
  assert ngrams.fraction_in_train([copied], 10) == 1.0
  assert ngrams.fraction_in_train([novel], 10) == 0.0
  assert ngrams.fraction_in_train([copied, novel], 10) == 0.5  # 11 of 22 10-grams
  assert ngrams.fraction_in_train([copied], 30) is None  # no sample has 30 symbols
  # Id 0 must count like any other symbol (a hash that ignored it would match these).
  assert ngrams.fraction_in_train([np.array([0] * 10)], 10) == 0.0


@pytest.mark.parametrize('n, alphabet', [(1, 4), (3, 12), (10, 4)])
def test_fraction_matches_brute_force(n, alphabet):
  rng = np.random.default_rng(n)
  train = rng.integers(0, alphabet, size=2000)
  samples = [rng.integers(0, alphabet, size=50) for _ in range(5)] + [train[100:160]]
  report = novelty.TrainingNgrams(train).report(samples, sizes=(n,))
  assert report == {str(n): pytest.approx(_brute_force(samples, train, n))}
  assert 0 < report[str(n)] < 1 or n == 1


@pytest.mark.slow
def test_training_logs_novelty_into_results(smoke_run):
  results = json.loads((smoke_run / 'results.json').read_text())
  fractions = results['copied_ngram_fraction']
  assert set(fractions) == {'10', '20', '30'}
  assert all(0.0 <= f <= 1.0 for f in fractions.values())
  assert fractions['10'] >= fractions['20'] >= fractions['30']  # a longer n-gram is rarer
