"""The sampler against step-by-step references, and `python -m seqlab.sample` on a smoke run."""

import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from seqlab.models import char_rnn as model_lib
from seqlab.run import load as runs
from seqlab.analysis import sample as sample_cli
from seqlab import generate as sampling

VOCAB = 13


@pytest.fixture(scope='module', params=['lstm', 'gru'])
def trained_like(request):
  """A small model with weights large enough that its distributions are far from uniform."""
  config = model_lib.ModelConfig(vocab_size=VOCAB, cell=request.param, num_layers=2,
                                 hidden_size=24)
  params = model_lib.init_params(config, seed=3)
  params = jax.tree.map(lambda p: p * 2.5, params)
  return model_lib.CharLM(config), params


def _step_by_step_greedy(model, params, prime, length):
  """Reference: feed the prime one symbol at a time, then take the argmax in a Python loop."""
  carry = model.init_carry(1)
  for token in prime:
    logits, carry = model.apply({'params': params}, jnp.array([[token]]), carry)
  out = []
  for _ in range(length):
    token = int(jnp.argmax(logits[0, -1]))
    out.append(token)
    logits, carry = model.apply({'params': params}, jnp.array([[token]]), carry)
  return out


def _teacher_forced_logits(model, params, prime, generated):
  """Logits before each generated symbol, from one pass over prime + generated."""
  tokens = np.concatenate([prime, generated[:-1]])[None]
  logits, _ = model.apply({'params': params}, jnp.asarray(tokens), model.init_carry(1))
  return np.asarray(logits[0, len(prime) - 1:])


def test_greedy_equals_step_by_step_argmax_after_prime(trained_like):
  model, params = trained_like
  prime = [3, 1, 4, 1, 5]
  sample = sampling.make_sampler(model, length=25)
  out = sample(params, prime, 2, jax.random.PRNGKey(0), greedy=True)
  expected = _step_by_step_greedy(model, params, prime, 25)
  assert np.asarray(out.ids).tolist() == [expected, expected]
  assert np.all(np.asarray(out.entropy) == 0.0)


def test_low_temperature_approaches_greedy(trained_like):
  model, params = trained_like
  sample = sampling.make_sampler(model, length=30)
  greedy = sample(params, [2], 1, jax.random.PRNGKey(0), greedy=True).ids
  cold = sample(params, [2], 4, jax.random.PRNGKey(7), temperature=1e-4).ids
  hot = sample(params, [2], 4, jax.random.PRNGKey(7), temperature=1.0).ids
  assert np.array_equal(np.asarray(cold), np.repeat(np.asarray(greedy), 4, axis=0))
  assert not np.array_equal(np.asarray(hot), np.asarray(cold))


def test_top_k_never_leaves_the_top_k(trained_like):
  model, params = trained_like
  prime = np.array([0, 7], np.int32)
  sample = sampling.make_sampler(model, length=40)
  for k in (1, 3):
    ids = np.asarray(sample(params, prime, 8, jax.random.PRNGKey(k), temperature=3.0,
                            top_k=k).ids)
    for row in ids:
      logits = _teacher_forced_logits(model, params, prime, row)
      ranks = (logits > logits[np.arange(len(row)), row][:, None]).sum(axis=1)
      assert ranks.max() < k, f'top_k={k} emitted a symbol of rank {ranks.max()}'


def test_entropy_is_that_of_the_sampling_distribution(trained_like):
  model, params = trained_like
  prime = np.array([5], np.int32)
  sample = sampling.make_sampler(model, length=10)
  out = sample(params, prime, 1, jax.random.PRNGKey(1), temperature=0.7)
  logits = _teacher_forced_logits(model, params, prime, np.asarray(out.ids[0])) / 0.7
  p = np.exp(logits - logits.max(axis=1, keepdims=True))
  p /= p.sum(axis=1, keepdims=True)
  np.testing.assert_allclose(out.entropy[0], -(p * np.log(p)).sum(axis=1), rtol=1e-4, atol=1e-5)


def test_seed_reproducible_and_no_recompile_across_options(trained_like, caplog):
  model, params = trained_like
  sample = sampling.make_sampler(model, length=20)
  first = sample(params, [1, 2], 3, jax.random.PRNGKey(5), temperature=0.9)
  jax.config.update('jax_log_compiles', True)
  try:
    with caplog.at_level(logging.WARNING):
      again = sample(params, [1, 2], 3, jax.random.PRNGKey(5), temperature=0.9)
      other = sample(params, [1, 2], 3, jax.random.PRNGKey(6), temperature=0.9)
      sample(params, [1, 2], 3, jax.random.PRNGKey(5), temperature=0.3, top_k=4)
      sample(params, [2, 1], 3, jax.random.PRNGKey(5), temperature=1.5, greedy=True)
  finally:
    jax.config.update('jax_log_compiles', False)
  assert np.array_equal(first.ids, again.ids)
  assert not np.array_equal(first.ids, other.ids)
  compiles = [r.getMessage() for r in caplog.records if 'Compiling' in r.getMessage()]
  assert not compiles, compiles


# --- python -m seqlab.sample on a smoke run

def _sample_cli(*args):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  return subprocess.run([sys.executable, '-m', 'seqlab.sample', *args], cwd=ROOT, env=env,
                        capture_output=True, timeout=300)


def test_sample_cli_prints_reproducible_text(smoke_run):
  args = ('--workdir', str(smoke_run), '--prime', 'ROMEO:', '--length', '60', '--seed', '3',
          '--temperature', '0.8', '--num_samples', '2')
  first, second = _sample_cli(*args), _sample_cli(*args)
  assert first.returncode == 0, first.stderr.decode()
  text = first.stdout.decode('utf-8')
  assert text == second.stdout.decode('utf-8')
  assert text.count('--- sample ') == 2 and text.count('ROMEO:') >= 2
  assert 'best checkpoint at step' in first.stderr.decode()
  # The same text from the library call the CLI makes.
  run = runs.load_run(smoke_run)
  samples = sample_cli.generate(run, 'ROMEO:', 60, 2, 0.8, 0, False, 3)
  assert text == ''.join(f'--- sample {i + 1} ---\n{s}\n' for i, s in enumerate(samples))
  assert all(len(s) == len('ROMEO:') + 60 for s in samples)


def test_sample_cli_checkpoint_choice(smoke_run):
  greedy = lambda which: _sample_cli('--workdir', str(smoke_run), '--greedy', '--length', '40',
                                     '--checkpoint', which)
  latest, step40 = greedy('latest'), greedy('40')
  assert latest.returncode == 0 and step40.returncode == 0, latest.stderr.decode()
  assert latest.stdout == step40.stdout  # latest is step 40 of the 40-step smoke run


@pytest.mark.parametrize('args, message', [
    (('--prime', 'ROMEO€'), "--prime: text has symbols outside the vocabulary: ['€']"),
    (('--temperature', '0'), '--temperature must be > 0'),
    (('--temperature', '-1'), '--temperature must be > 0'),
    (('--length', '0'), '--length must be >= 1'),
    (('--checkpoint', '7'), 'has no checkpoint at step 7'),
])
def test_sample_cli_bad_input(smoke_run, args, message):
  result = _sample_cli('--workdir', str(smoke_run), *args)
  err = result.stderr.decode('utf-8').strip().splitlines()
  assert result.returncode == 2
  assert err[-1].startswith('error: ') and message in err[-1], err


def test_sample_cli_without_checkpoint_or_run(smoke_run, tmp_path):
  untrained = tmp_path / 'untrained'
  untrained.mkdir()
  for name in ('config.json', 'vocab.json'):
    (untrained / name).write_bytes((smoke_run / name).read_bytes())
  (tmp_path / 'config_only').mkdir()
  (tmp_path / 'config_only' / 'config.json').write_bytes((smoke_run / 'config.json').read_bytes())
  for workdir, message in ((untrained, 'has no checkpoint yet; train it first'),
                           (tmp_path / 'config_only', 'no vocab.json'),
                           (tmp_path / 'nope', 'does not exist'),
                           (ROOT, 'not a seqlab run directory')):
    result = _sample_cli('--workdir', str(workdir))
    err = result.stderr.decode().strip().splitlines()
    assert result.returncode == 2 and err[-1].startswith('error: ') and message in err[-1], err
  assert sorted(p.name for p in untrained.iterdir()) == ['config.json', 'vocab.json']
