"""The training loop: learning, exact resume, compile count, NaN handling, run directory."""

import json
import logging
import math
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import events, final_params, final_state, random_params, scalars, tiny_config
from seqlab import data
from seqlab import evaluate as evaluate_lib
from seqlab.models import char_rnn as model_lib
from seqlab import optim
from seqlab import steps
from seqlab import train
from seqlab.errors import NonFiniteLossError, SeqlabError


@pytest.mark.slow
def test_loss_falls_on_a_small_corpus(text_file, tmp_path):
  config = tiny_config(text_file, **{'train.num_steps': 150, 'optim.learning_rate': 1e-2,
                                     'model.hidden_size': 32, 'eval.every_steps': 50,
                                     'data.batch_size': 16, 'data.seq_len': 32})
  results = train.train_and_evaluate(config, tmp_path / 'run')
  losses = scalars(tmp_path / 'run', 'train/loss')
  vocab_size = len(set(text_file.read_text()))
  assert losses[0][1] > math.log(vocab_size) - 0.3  # starts near uniform
  assert results['val_loss'] < 1.3 < losses[0][1] - 1.5
  val = scalars(tmp_path / 'run', 'val/loss')
  assert [s for s, _ in val] == [50, 100, 150] and val[-1][1] < val[0][1]


@pytest.mark.slow
@pytest.mark.parametrize('batching', ['streams', 'windows'])
def test_resume_equals_uninterrupted(text_file, tmp_path, batching):
  # Dropout, carried state across an epoch boundary, and a stop between checkpoints.
  config = tiny_config(text_file, **{'data.batching': batching, 'model.dropout': 0.2,
                                     'data.batch_size': 16, 'data.seq_len': 16,
                                     'train.num_steps': 30, 'eval.every_steps': 10,
                                     'log.checkpoint_every_steps': 10, 'log.every_steps': 1,
                                     'log.sample_steps': (12, 14), 'log.sample_every_steps': 30})
  assert train.build(config, tmp_path / 'x').batches.batches_per_epoch < 30
  whole = train.train_and_evaluate(config, tmp_path / 'whole')
  assert train.train_and_evaluate(config, tmp_path / 'split', stop_at_step=13) is None
  assert final_state(tmp_path / 'split').step == 13
  resumed = train.train_and_evaluate(config, tmp_path / 'split')
  for key in ('val_loss', 'best_val_loss', 'best_step', 'steps', 'chars_seen'):
    assert resumed[key] == pytest.approx(whole[key], rel=1e-6), key
  a, b = final_state(tmp_path / 'whole'), final_state(tmp_path / 'split')
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)
  # Per-step losses match, and the resumed run's curve has no duplicated steps.
  whole_losses, split_losses = (scalars(tmp_path / d, 'train/loss') for d in ('whole', 'split'))
  assert [s for s, _ in split_losses] == list(range(1, 31))
  np.testing.assert_allclose([v for _, v in split_losses], [v for _, v in whole_losses], rtol=1e-6)
  # Samples too: the resumed run's samples.md reads like the uninterrupted one's.
  samples = [(tmp_path / d / 'samples.md').read_text() for d in ('whole', 'split')]
  assert samples[0] == samples[1] and samples[0].count('## step') == 3


@pytest.mark.slow
def test_train_step_compiles_once(text_file, tmp_path, caplog):
  config = tiny_config(text_file, **{'train.num_steps': 20, 'eval.every_steps': 5,
                                     'log.every_steps': 3, 'log.checkpoint_every_steps': 4})
  jax.config.update('jax_log_compiles', True)
  try:
    with caplog.at_level(logging.WARNING):
      train.train_and_evaluate(config, tmp_path / 'run', stop_at_step=9)
      train.train_and_evaluate(config, tmp_path / 'run')  # resumed state must not retrace
  finally:
    jax.config.update('jax_log_compiles', False)
  compiles = [r.getMessage() for r in caplog.records if 'Compiling' in r.getMessage()]
  for name in ('train_step', 'eval_step'):
    count = sum(f'jit({name})' in m for m in compiles)
    assert count == 2, f'{name} compiled {count} times in two processes: {compiles}'


@pytest.mark.slow  # the step without jit runs op by op: ~40 s on 2 CPU cores
def test_jit_train_step_equals_no_jit(text_file):
  config = tiny_config(text_file, **{'model.dropout': 0.3})
  setup = train.build(config, text_file.parent / 'unused')
  model = model_lib.CharLM(setup.model_config)
  step_fn = steps.make_train_step(model, setup.optimizer, setup.schedule)
  state = steps.init_state(setup.model_config, setup.optimizer, 4, 0)
  inputs, targets, _ = setup.batches.batch(0)
  jitted = jax.jit(step_fn)(state, inputs, targets, False)
  with jax.disable_jit():
    eager = step_fn(state, inputs, targets, False)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), jitted, eager)


def test_evaluate_equals_one_pass_over_the_split(text_file):
  config = model_lib.ModelConfig(vocab_size=20, hidden_size=8)
  model = model_lib.CharLM(config)
  params = random_params(model.init, jnp.zeros((1, 1), jnp.int32), model_lib.init_carry(config, 1))
  tokens = np.random.default_rng(0).integers(0, 20, size=200).astype(np.int32)
  result = evaluate_lib.evaluate(jax.jit(steps.make_eval_step(model)), params, config, tokens,
                                 ml_collections.ConfigDict({'num_streams': 1, 'seq_len': 7}))
  logits, _ = jax.jit(model.apply)({'params': params}, tokens[None, :-1],
                                   model_lib.init_carry(config, 1))
  logits = np.asarray(logits[0], np.float64)  # the reference in float64 numpy
  probs = np.exp(logits - logits.max(axis=1, keepdims=True))
  target_probs = (probs / probs.sum(axis=1, keepdims=True))[np.arange(199), tokens[1:]]
  assert result['chars'] == 199
  assert result['loss'] == pytest.approx(float(np.mean(-np.log(target_probs))), rel=1e-5)
  assert result['bpc'] == pytest.approx(float(np.mean(-np.log2(target_probs))), rel=1e-5)


@pytest.mark.slow
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(text_file, tmp_path):
  config = tiny_config(text_file, **{'train.num_steps': 10, 'optim.schedule': 'constant'})
  train.train_and_evaluate(config, tmp_path / 'run')
  good = final_state(tmp_path / 'run')
  # A rate near float32's largest: the first step sends the parameters to ~1e38, the next
  # overflows them (optim.learning_rate must be finite).
  config.train.num_steps, config.optim.learning_rate, config.optim.grad_clip = 40, 1e38, 0.0
  config.log.every_steps = 5
  with pytest.raises(NonFiniteLossError, match=r'at step 1[1-5]; stopped.*step 10\)'):
    train.train_and_evaluate(config, tmp_path / 'run')
  kept = final_state(tmp_path / 'run')
  assert int(kept.step) == 10
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(kept.params))
  jax.tree.map(np.testing.assert_array_equal, kept.params, good.params)


@pytest.mark.slow
def test_refuses_to_resume_with_another_model_shape(text_file, tmp_path):
  config = tiny_config(text_file, **{'train.num_steps': 4})
  train.train_and_evaluate(config, tmp_path / 'run')
  before = {p.name: p.read_bytes() for p in (tmp_path / 'run').iterdir() if p.is_file()}
  config.model.hidden_size = 32
  with pytest.raises(SeqlabError, match='model.hidden_size=16.*new --workdir'):
    train.train_and_evaluate(config, tmp_path / 'run')
  after = {p.name: p.read_bytes() for p in (tmp_path / 'run').iterdir() if p.is_file()}
  assert after == before
  other_text = tmp_path / 'other.txt'
  other_text.write_text(text_file.read_text() + 'XYZ' * 100)
  config.model.hidden_size, config.data.path = 16, str(other_text)
  with pytest.raises(SeqlabError, match="does not fit the vocabulary.*'X', 'Y', 'Z'"):
    train.train_and_evaluate(config, tmp_path / 'run')
  after = {p.name: p.read_bytes() for p in (tmp_path / 'run').iterdir() if p.is_file()}
  assert after == before
  config.data.path, config.train.num_steps = str(text_file), 3
  with pytest.raises(SeqlabError, match='at step 4, past train.num_steps=3'):
    train.train_and_evaluate(config, tmp_path / 'run')
  after = {p.name: p.read_bytes() for p in (tmp_path / 'run').iterdir() if p.is_file()}
  assert after == before


@pytest.mark.slow
def test_run_directory_holds_the_run(text_file, tmp_path, capsys):
  config = tiny_config(text_file, **{'train.num_steps': 12, 'eval.every_steps': 6,
                                     'log.sample_steps': (4,), 'log.sample_every_steps': 8,
                                     'data.test_fraction': 0.1})
  run = tmp_path / 'run'
  results = train.train_and_evaluate(config, run)
  assert json.loads((run / 'results.json').read_text()) == results
  assert results['steps'] == 12 and results['chars_seen'] == 12 * 4 * 8
  # The parameters of a 2-layer LSTM (hidden 16, one-hot input) and its decoder, counted by
  # hand: 4 gate blocks of (input + recurrent) weights and a bias per layer.
  vocab = len(set(text_file.read_text()))
  expected = 4 * 16 * (vocab + 16 + 1) + 4 * 16 * (16 + 16 + 1) + (16 + 1) * vocab
  assert results['num_params'] == expected
  assert sum(x.size for x in jax.tree.leaves(final_params(run))) == expected
  for key in ('test_loss', 'test_bpc', 'chars_per_sec', 'wall_time', 'best_val_loss'):
    assert results[key] > 0, key
  assert json.loads((run / 'config.json').read_text())['model']['hidden_size'] == 16
  assert data.Vocabulary.load(run / 'vocab.json').size == len(set(text_file.read_text()))
  assert (run / 'checkpoints' / 'latest' / '12').is_dir()
  assert (run / 'checkpoints' / 'best').is_dir()
  samples = (run / 'samples.md').read_text()
  val_at_6 = re.search(r'step 6/12 \| val loss (\d\.\d{4})', capsys.readouterr().out)[1]
  assert '## step 4 (no val loss yet)' in samples
  assert f'## step 8 (val loss {val_at_6} at step 6)' in samples

  run_events = events(run)
  for tag in ('train/loss', 'train/bpc', 'val/loss', 'val/bpc', 'lr', 'grad_norm',
              'chars_per_sec', 'final/val_loss'):
    assert tag in run_events.Tags()['scalars'], tag
  # results.json and TensorBoard hold the same final numbers.
  for tag, key in (('val/loss', 'val_loss'), ('val/bpc', 'val_bpc')):
    assert run_events.Scalars(tag)[-1].step == 12
    assert run_events.Scalars(tag)[-1].value == pytest.approx(results[key], rel=1e-6), tag
  sample_tags = [t for t in run_events.Tags()['tensors'] if t.startswith('samples')]
  assert len(sample_tags) == 1  # one tag, so TensorBoard's slider walks through training
  assert [e.step for e in run_events.Tensors(sample_tags[0])] == [4, 8]
  hparams = run_events.PluginTagToContent('hparams')
  start = plugin_data_pb2.HParamsPluginData.FromString(hparams['_hparams_/session_start_info'])
  assert start.session_start_info.hparams['model.hidden_size'].number_value == 16
  assert start.session_start_info.hparams['model.cell'].string_value == 'lstm'
  # The session's metrics are the final/* scalars beside it (TensorBoard builds a single run's
  # experiment from its session; a sweep writes one experiment for all its trials).
  assert '_hparams_/session_end_info' in hparams and '_hparams_/experiment' not in hparams
  assert run_events.Scalars('final/num_params')[-1].value == expected
  for key in ('val_loss', 'val_bpc', 'test_loss'):
    assert run_events.Scalars(f'final/{key}')[-1].value == pytest.approx(results[key], rel=1e-6)
  # add_hparams would have made a sub-run folder; everything is in the run's own event file.
  assert [p for p in run.iterdir() if p.is_dir()] == [run / 'checkpoints']


@pytest.mark.slow
def test_test_loss_comes_from_the_best_checkpoint(text_file, tmp_path):
  config = tiny_config(text_file, **{'train.num_steps': 12, 'eval.every_steps': 4,
                                     'data.test_fraction': 0.1})
  results = train.train_and_evaluate(config, tmp_path / 'run')
  setup = train.build(config, tmp_path / 'run')
  best = final_state(tmp_path / 'run', 'best')
  val_losses = scalars(tmp_path / 'run', 'val/loss')  # at steps 4, 8, 12
  best_step, best_loss = min(val_losses, key=lambda step_loss: step_loss[1])
  assert results['best_step'] == int(best.step) == best_step
  assert results['best_val_loss'] == pytest.approx(best_loss, rel=1e-6)
  model = model_lib.CharLM(setup.model_config)
  test = evaluate_lib.evaluate(jax.jit(steps.make_eval_step(model)), best.params,
                               setup.model_config, setup.corpus.test, config.eval)
  assert results['test_loss'] == pytest.approx(test['loss'], rel=1e-6)


def test_schedules():
  config = tiny_config('unused').optim
  config.learning_rate, config.decay_rate, config.decay_after_epochs = 1.0, 0.5, 2
  config.schedule = 'exponential'
  lr = optim.make_schedule(config, num_steps=100, steps_per_epoch=10)
  # char-rnn: epochs 0 and 1 at the base rate, then halved once per epoch.
  assert [float(lr(s)) for s in (0, 19, 20, 29, 30, 45)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]
  config.schedule, config.warmup_steps, config.final_lr_fraction = 'cosine', 10, 0.1
  lr = optim.make_schedule(config, num_steps=100, steps_per_epoch=10)
  assert float(lr(0)) == 0.0 and float(lr(10)) == pytest.approx(1.0)
  assert float(lr(100)) == pytest.approx(0.1) and 0.1 < float(lr(50)) < 1.0
  config.schedule = 'linear'
  with pytest.raises(SeqlabError, match='optim.schedule'):
    optim.make_schedule(config, 100, 10)
  config.name = 'sgd'
  with pytest.raises(SeqlabError, match='optim.name'):
    optim.make_optimizer(config, lambda s: 1.0)


@pytest.mark.slow
@pytest.mark.parametrize('vocab,batching', [('char', 'windows'), ('byte', 'streams')])
def test_non_ascii_text_without_newlines_trains_and_samples(tmp_path, vocab, batching):
  path = tmp_path / 'poem.txt'
  path.write_text('Тише, мыши: кот на крыше 🐈 猫在屋顶上。' * 60, encoding='utf-8')
  config = tiny_config(path, **{'data.vocab': vocab, 'data.batching': batching,
                                'train.num_steps': 6, 'eval.every_steps': 3,
                                'log.sample_steps': (3,), 'log.sample_every_steps': 6})
  results = train.train_and_evaluate(config, tmp_path / 'run')
  assert math.isfinite(results['val_loss'])
  saved = data.Vocabulary.load(tmp_path / 'run' / 'vocab.json')
  assert saved.mode == vocab and saved.size == (len(set(path.read_text())) if vocab == 'char'
                                                else len(set(path.read_bytes())))
  assert (tmp_path / 'run' / 'samples.md').read_text(encoding='utf-8').count('## step') == 2


def test_reset_zeroes_the_carried_state(text_file):
  config = tiny_config(text_file)
  setup = train.build(config, text_file.parent / 'unused')
  step_fn = jax.jit(steps.make_train_step(model_lib.CharLM(setup.model_config), setup.optimizer,
                                          setup.schedule))
  fresh = steps.init_state(setup.model_config, setup.optimizer, 4, 0)
  carried = fresh.replace(carry=jax.tree.map(lambda c: c + 0.5, fresh.carry))
  inputs, targets, _ = setup.batches.batch(0)
  loss = lambda state, reset: float(step_fn(state, inputs, targets, reset)[1]['loss'])
  assert loss(carried, True) == loss(fresh, False) == loss(fresh, True)
  assert loss(carried, False) != loss(fresh, False)
  new_state, _ = step_fn(fresh, inputs, targets, True)
  assert not np.allclose(new_state.carry[0][1], 0.0)  # the state is handed to the next batch


@pytest.mark.slow
def test_same_seed_same_run_other_seed_other_run(text_file, tmp_path):
  """Determinism on CPU: the same config and seed give bit-identical losses and parameters."""
  results, losses, params = {}, {}, {}
  for name, seed in (('a', 0), ('b', 0), ('c', 1)):
    config = tiny_config(text_file, **{'train.num_steps': 8, 'model.dropout': 0.2,
                                       'log.every_steps': 1})
    config.seed = seed
    results[name] = train.train_and_evaluate(config, tmp_path / name)
    losses[name] = scalars(tmp_path / name, 'train/loss')
    params[name] = final_params(tmp_path / name)
  assert len(losses['a']) == 8 and losses['a'] == losses['b'] != losses['c']
  assert results['a']['val_loss'] == results['b']['val_loss'] != results['c']['val_loss']
  jax.tree.map(np.testing.assert_array_equal, params['a'], params['b'])
