"""Neuron recording, text features, unit search, and `python -m seqlab.neurons` on a smoke run."""

import json
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import random_params, run_command
from seqlab import data
from seqlab.models import char_rnn as model_lib
from seqlab.analysis import neurons
from seqlab.run import load as runs
from seqlab.models import registry


def _fake_run(cell, text):
  vocab = data.Vocabulary.from_units('char', data.to_units(text.encode(), 'char'))
  config = model_lib.ModelConfig(vocab_size=vocab.size, cell=cell, num_layers=2, hidden_size=8)
  model = model_lib.CharLM(config)
  params = random_params(model.init, jnp.zeros((1, 1), jnp.int32), model_lib.init_carry(config, 1),
                         seed=1)
  return runs.LoadedRun(pathlib.Path('none'), None, vocab, model, params, step=0, which='best')


@pytest.mark.parametrize('cell', ['lstm', 'gru', 'rnn'])
def test_recorded_units_equal_the_models_own_forward_pass(cell):
  text = 'To be, or not to be: "that" is (the) question.\n'
  run = _fake_run(cell, text)
  recording = neurons.record(run, text)
  kinds = ('c', 'h') if cell == 'lstm' else ('h',)
  assert recording.activations.shape == (len(text), 2 * len(kinds) * 8)
  assert recording.units[:2] == [f'0/{kinds[0]}/0', f'0/{kinds[0]}/1']
  # Reference: one symbol at a time through the ordinary model, reading the carry after each.
  carry, logits_steps = registry.init_carry(run.model.config, 1), []
  step = jax.jit(lambda token, carry: run.model.apply({'params': run.params}, token, carry))
  for t, token in enumerate(run.vocab.encode(text)):
    logits, carry = step(jnp.array([[token]]), carry)
    logits_steps.append(logits[0, 0])
    expected = np.concatenate([np.asarray(s[0]) for layer in carry
                               for s in (layer if cell == 'lstm' else (layer,))])
    np.testing.assert_allclose(recording.activations[t], expected, rtol=1e-5, atol=1e-6)
  probs = jax.nn.softmax(jnp.stack(logits_steps), axis=-1)
  top = np.argsort(-np.asarray(probs), axis=1)[:, :5]
  np.testing.assert_array_equal(recording.top_ids, top)
  np.testing.assert_allclose(recording.top_probs, np.take_along_axis(np.asarray(probs), top, 1),
                             rtol=1e-5)


def test_text_features_on_a_handmade_text():
  text = 'ROMEO:\n  say "hi (x)" now\nok'
  f = neurons.text_features(text)
  mark = lambda name: ''.join('1' if v else '0' for v in f[name])
  assert len(text) == 7 + 19 + 2
  assert mark('inside_quotes') == '0000000' + '000000' + '11111111' + '00000' + '00'
  assert mark('inside_brackets') == '0000000' + '0000000000' + '111' + '000000' + '00'
  assert mark('after_newline') == '0000001' + '0' * 18 + '1' + '00'
  assert mark('speaker_name') == '1111110' + '0' * 21
  assert f['indentation'].tolist() == [0] * 7 + [2] * 18 + [0] + [0, 0]
  assert f['position_in_line'].tolist() == list(range(7)) + list(range(19)) + [0, 1]


def test_unit_search_finds_a_unit_that_tracks_quotes():
  rng = np.random.default_rng(0)
  text = ''.join(rng.choice(list('ab "c\n'), size=3000))
  quotes = neurons.text_features(text)['inside_quotes']
  assert 0.2 < quotes.mean() < 0.8
  activations = rng.normal(size=(len(text), 40)).astype(np.float32)
  activations[:, 17] = np.tanh(2 * quotes - 1) + 0.3 * rng.normal(size=len(text))  # the quote unit
  activations[:, 5] = 1.0  # a dead unit: r must be 0, not NaN
  recording = neurons.Recording(text, [f'0/h/{j}' for j in range(40)], activations,
                                np.zeros((len(text), 5), np.int32), np.zeros((len(text), 5)))
  report = neurons.best_units(recording, {'inside_quotes': quotes, 'flat': np.ones(len(text))})
  best = report['inside_quotes']['units'][0]
  assert best['unit'] == '0/h/17'
  assert best['r'] == pytest.approx(np.corrcoef(activations[:, 17], quotes)[0, 1], abs=1e-4)
  assert best['r'] > 0.9 and abs(report['inside_quotes']['units'][1]['r']) < 0.1
  assert report['flat'] == {'units': [], 'note': 'constant in this text'}
  assert neurons.correlations(activations, quotes)[5] == 0.0


def _neurons_cli(*args):
  return run_command(*args, module='seqlab.neurons')


@pytest.mark.slow
def test_neurons_cli_on_a_smoke_run(smoke_run, tmp_path):
  text = tmp_path / 'play.txt'
  text.write_text('ROMEO:\nBut soft, what light through yonder window breaks?\n\n'
                  "JULIET:\n  'Ay me!'\n" * 3)
  out = tmp_path / 'out'
  result = _neurons_cli('--workdir', str(smoke_run), '--text', str(text), '--out', str(out),
                        '--unit', '1/c/3')
  assert result.returncode == 0, result.stderr
  report = json.loads((out / 'units.json').read_text())
  assert set(report) == set(neurons.text_features('x'))
  assert report['speaker_name']['units'] and report['indentation']['units']
  saved = np.load(out / 'activations.npz')
  assert saved['activations'].shape == (len(text.read_text()), 2 * 2 * 32)
  unit_pages = ['unit_1_c_3'] + [f'unit_{k}' for k, v in report.items() if v['units']]
  for name in unit_pages:
    page = (out / f'{name}.html').read_text()
    assert page.startswith('<!doctype html>') and 'yonder' in re.sub('<[^>]+>', '', page)
  predictions = (out / 'predictions.html').read_text()
  assert predictions.count('<div class="c">') == len(text.read_text())
  for name in unit_pages + ['predictions']:
    assert (out / f'{name}.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert '| speaker_name |' in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize('args, message', [
    (('--text', 'missing.txt'), '--text missing.txt is not a file'),
    (('--unit', '1-c-3'), 'write units as layer/state/index'),
    (('--text', 'tests/conftest.py'),
     "conftest.py: text has symbols outside the vocabulary: ['\"', '#'"),
    (('--unit', '5/c/3'), 'does not exist in a 2x32 lstm'),
    (('--checkpoint', 'newest'), '--checkpoint must be best, latest or a step number'),
])
def test_neurons_cli_bad_input(smoke_run, tmp_path, args, message):
  result = _neurons_cli('--workdir', str(smoke_run), '--out', str(tmp_path / 'out'), *args)
  err = result.stderr.strip().splitlines()
  assert result.returncode == 2 and err[-1].startswith('error: ') and message in err[-1], err
  assert not (tmp_path / 'out').exists()
