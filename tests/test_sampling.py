"""The sampler against step-by-step references, and `python -m seqlab.sample` on a smoke run."""

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, random_params, run_command
from seqlab.models import char_rnn as model_lib
from seqlab.run import load as runs
from seqlab.analysis import sample as sample_cli
from seqlab import generate as sampling
from seqlab.models import registry

VOCAB = 13


# Every test samples BATCH sequences of LENGTH symbols after a prime of 3 symbols from one
# sampler per model, so that they share its two compilations.
LENGTH, BATCH = 30, 8


@pytest.fixture(scope='module', params=['lstm', 'gru'])
def trained_like(request):
  """A small model with weights large enough that its distributions are far from uniform, and
  its sampler."""
  config = model_lib.ModelConfig(vocab_size=VOCAB, cell=request.param, num_layers=2,
                                 hidden_size=24)
  model = model_lib.CharLM(config)
  params = random_params(model.init, jnp.zeros((1, 1), jnp.int32), model_lib.init_carry(config, 1),
                         seed=3)
  return model, jax.tree.map(lambda p: p * 2.5, params), sampling.make_sampler(model, LENGTH)


@functools.partial(jax.jit, static_argnums=0)
def _apply(model, params, tokens_BxT, carry):
  return model.apply({'params': params}, tokens_BxT, carry)


def _step_by_step_greedy(model, params, prime, length):
  """Reference: feed the prime one symbol at a time, then take the argmax in a Python loop."""
  carry = registry.init_carry(model.config, 1)
  for token in prime:
    logits, carry = _apply(model, params, jnp.array([[token]]), carry)
  out = []
  for _ in range(length):
    token = int(jnp.argmax(logits[0, -1]))
    out.append(token)
    logits, carry = _apply(model, params, jnp.array([[token]]), carry)
  return out


def _teacher_forced_logits(model, params, prime, generated_BxL):
  """Logits before each generated symbol (BxLxV), from one pass over prime + generated."""
  generated_BxL = np.asarray(generated_BxL)
  tokens = np.concatenate([np.broadcast_to(prime, (len(generated_BxL), len(prime))),
                           generated_BxL[:, :-1]], axis=1)
  logits, _ = _apply(model, params, jnp.asarray(tokens, jnp.int32),
                     registry.init_carry(model.config, len(generated_BxL)))
  return np.asarray(logits[:, len(prime) - 1:])


def test_greedy_equals_step_by_step_argmax_after_prime(trained_like):
  model, params, sample = trained_like
  prime = [3, 1, 4]
  out = sample(params, prime, BATCH, jax.random.PRNGKey(0), greedy=True)
  expected = _step_by_step_greedy(model, params, prime, LENGTH)
  assert np.asarray(out.ids).tolist() == [expected] * BATCH
  assert np.all(np.asarray(out.entropy) == 0.0)


def test_low_temperature_approaches_greedy(trained_like):
  _, params, sample = trained_like
  greedy = sample(params, [2, 0, 2], BATCH, jax.random.PRNGKey(0), greedy=True).ids
  cold = sample(params, [2, 0, 2], BATCH, jax.random.PRNGKey(7), temperature=1e-4).ids
  hot = sample(params, [2, 0, 2], BATCH, jax.random.PRNGKey(7), temperature=1.0).ids
  assert len(set(map(tuple, np.asarray(greedy).tolist()))) == 1
  assert np.array_equal(np.asarray(cold), np.asarray(greedy))
  assert not np.array_equal(np.asarray(hot), np.asarray(cold))


def test_top_k_never_leaves_the_top_k(trained_like):
  model, params, sample = trained_like
  prime = np.array([0, 7, 1], np.int32)
  for k in (1, 3):
    ids = np.asarray(sample(params, prime, BATCH, jax.random.PRNGKey(k), temperature=3.0,
                            top_k=k).ids)
    logits_BxLxV = _teacher_forced_logits(model, params, prime, ids)
    chosen = np.take_along_axis(logits_BxLxV, ids[..., None], axis=-1)
    ranks = (logits_BxLxV > chosen).sum(axis=-1)
    assert ranks.max() < k, f'top_k={k} emitted a symbol of rank {ranks.max()}'
    if k == 3:
      assert ranks.max() > 0  # ... and does sample below the top symbol


def test_entropy_is_that_of_the_sampling_distribution(trained_like):
  model, params, sample = trained_like
  prime = np.array([5, 5, 2], np.int32)
  out = sample(params, prime, BATCH, jax.random.PRNGKey(1), temperature=0.7)
  logits = _teacher_forced_logits(model, params, prime, out.ids) / 0.7
  p = np.exp(logits - logits.max(axis=-1, keepdims=True))
  p /= p.sum(axis=-1, keepdims=True)
  np.testing.assert_allclose(out.entropy, -(p * np.log(p)).sum(axis=-1), rtol=1e-4, atol=1e-5)


def test_seed_reproducible_and_no_recompile_across_options(trained_like, caplog):
  _, params, sample = trained_like
  first = sample(params, [1, 2, 3], BATCH, jax.random.PRNGKey(5), temperature=0.9)
  jax.config.update('jax_log_compiles', True)
  try:
    with caplog.at_level(logging.WARNING):
      again = sample(params, [1, 2, 3], BATCH, jax.random.PRNGKey(5), temperature=0.9)
      other = sample(params, [1, 2, 3], BATCH, jax.random.PRNGKey(6), temperature=0.9)
      sample(params, [1, 2, 3], BATCH, jax.random.PRNGKey(5), temperature=0.3, top_k=4)
      sample(params, [2, 1, 3], BATCH, jax.random.PRNGKey(5), temperature=1.5, greedy=True)
  finally:
    jax.config.update('jax_log_compiles', False)
  assert np.array_equal(first.ids, again.ids)
  assert not np.array_equal(first.ids, other.ids)
  compiles = [r.getMessage() for r in caplog.records if 'Compiling' in r.getMessage()]
  assert not compiles, compiles


# --- python -m seqlab.sample on a smoke run

def _sample_cli(*args):
  return run_command(*args, module='seqlab.sample', text=False)


@pytest.mark.slow
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


@pytest.mark.slow
def test_sample_cli_checkpoint_choice(smoke_run):
  greedy = lambda which: _sample_cli('--workdir', str(smoke_run), '--greedy', '--length', '40',
                                     '--checkpoint', which)
  latest, step40 = greedy('latest'), greedy('40')
  assert latest.returncode == 0 and step40.returncode == 0, latest.stderr.decode()
  assert latest.stdout == step40.stdout  # latest is step 40 of the 40-step smoke run


@pytest.mark.slow
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


@pytest.mark.slow
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
