"""The two evaluation protocols (seqlab/evaluate.py): `windows` against losses computed by hand,
window by window from the zero state; `stream` against a step-by-step pass; the GPT's sliding
windows; what a run reports under each; and their configuration errors."""

import json
import pathlib

import jax
import numpy as np
import pytest
from ml_collections import config_dict

from configs import shakespeare
from configs import zoo
from conftest import run_command, scalars, tiny_config
from seqlab import data
from seqlab import evaluate as evaluate_lib
from seqlab import steps
from seqlab import train
from seqlab.errors import SeqlabError
from seqlab.models import flops
from seqlab.models import registry

V = 11


def _model(variant: str, **model_fields):
  """A tiny model of a config variant with random (seeded) parameters, vocabulary V."""
  config = zoo.get_config(f'{variant},smoke')
  for field, value in model_fields.items():
    config.model[field] = value
  model_config = registry.config_of(config.model, V)
  params = registry.init_params(model_config, seed=3)
  return model_config, registry.module_of(model_config), params


def _eval_config(**fields):
  config = config_dict.ConfigDict({'protocol': 'stream', 'both_protocols': True, 'window': 8,
                                   'num_streams': 3, 'seq_len': 5})
  config.update(fields)
  return config


_APPLY = {}  # one jitted forward per module


def _apply(module):
  if module not in _APPLY:
    _APPLY[module] = jax.jit(lambda params, inputs, carry: module.apply(
        {'params': params}, inputs, carry, train=False))
  return _APPLY[module]


def _nll_from_zero(module, params, model_config, inputs, targets, length=8) -> np.ndarray:
  """Per-position NLL of one sequence (at most `length` symbols) read from the zero state, by
  numpy's log-softmax. It is padded to `length` (one compilation): the models are causal
  (tests/test_zoo*.py), so what follows a position does not change its logits."""
  padded = np.zeros((1, length), np.int32)
  padded[0, :len(inputs)] = inputs
  logits, _ = _apply(module)(params, padded, registry.init_carry(model_config, 1))
  logits = np.asarray(logits[0, :len(targets)], np.float64)
  logz = np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1)) + logits.max(-1)
  return logz - logits[np.arange(len(targets)), targets]


def _tokens(n: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, V, n).astype(np.int32)


@pytest.mark.parametrize('n, window, stride', [(1, 4, None), (7, 8, None), (48, 8, None),
                                               (50, 8, None), (50, 8, 4), (9, 8, 4), (8, 8, 4),
                                               (100, 6, 3), (33, 5, 1)])
def test_window_chunks_score_every_prediction_once(n, window, stride):
  tokens = _tokens(n + 1)
  seen = np.zeros(n, int)
  stride_ = stride or window  # window k starts at k * stride: its position t predicts k*s+t+1
  chunks = list(data.window_chunks(tokens, window, 3, stride))
  assert all(i.shape == t.shape == m.shape == (3, window) for i, t, m in chunks)
  masks = np.concatenate([m for _, _, m in chunks])
  inputs = np.concatenate([i for i, _, _ in chunks])
  targets = np.concatenate([t for _, t, _ in chunks])
  for k, (row_mask, row_inputs, row_targets) in enumerate(zip(masks, inputs, targets)):
    for t in np.flatnonzero(row_mask):
      pos = k * stride_ + t
      seen[pos] += 1
      assert row_inputs[t] == tokens[pos]
      assert row_targets[t] == tokens[pos + 1]
      if stride is not None and pos >= window:  # sliding: at least half a window of context
        assert t >= window - stride
  assert (seen == 1).all()


def test_windows_protocol_equals_losses_by_hand():
  """48 predictions in 6 windows of 8, batched 3 at a time (two chunks): the mean loss, its
  standard error over windows and the loss by position, each window run alone from zero."""
  model_config, module, params = _model('lstm', hidden_size=16)
  tokens = _tokens(49)
  nll = np.stack([_nll_from_zero(module, params, model_config, tokens[k:k + 8],
                                 tokens[k + 1:k + 9]) for k in range(0, 48, 8)])  # (6, 8)
  step = jax.jit(steps.make_eval_step(module))
  result = evaluate_lib.evaluate_protocol(step, params, model_config, tokens, _eval_config(),
                                          'windows')
  assert result['chars'] == 48
  np.testing.assert_allclose(result['loss'], nll.mean(), rtol=1e-5)
  np.testing.assert_allclose(result['by_position'], nll.mean(axis=0), rtol=1e-5)
  window_means = nll.mean(axis=1)
  np.testing.assert_allclose(result['stderr'], window_means.std(ddof=1) / np.sqrt(6), rtol=1e-4)


@pytest.mark.slow  # test_windows_protocol_equals_losses_by_hand covers the fast tier
def test_windows_protocol_last_window_partial():
  """50 predictions: six full windows of 8 and one of 2, every prediction counted once."""
  model_config, module, params = _model('mingru')
  tokens = _tokens(51, seed=1)
  nll = np.concatenate([_nll_from_zero(module, params, model_config, tokens[k:min(k + 8, 50)],
                                       tokens[k + 1:min(k + 9, 51)]) for k in range(0, 50, 8)])
  step = jax.jit(steps.make_eval_step(module))
  result = evaluate_lib.evaluate_protocol(step, params, model_config, tokens, _eval_config(),
                                          'windows')
  assert result['chars'] == 50
  np.testing.assert_allclose(result['loss'], nll.mean(), rtol=1e-5)


@pytest.mark.parametrize('variant', [pytest.param('lstm', marks=pytest.mark.slow), 'hawk'])
def test_stream_protocol_with_one_stream_equals_a_step_by_step_pass(variant):
  model_config, module, params = _model(variant)
  tokens = _tokens(37, seed=2)
  carry, total = registry.init_carry(model_config, 1), 0.0
  for t in range(36):
    logits, carry = _apply(module)(params, tokens[None, t:t + 1], carry)
    logits = np.asarray(logits[0, 0], np.float64)
    total += np.log(np.sum(np.exp(logits - logits.max()))) + logits.max() - logits[tokens[t + 1]]
  step = jax.jit(steps.make_eval_step(module))
  result = evaluate_lib.evaluate_protocol(step, params, model_config, tokens,
                                          _eval_config(num_streams=1, seq_len=5), 'stream')
  assert result['chars'] == 36
  np.testing.assert_allclose(result['loss'], total / 36, rtol=1e-5)


def test_gpt_stream_protocol_is_sliding_windows_scoring_their_second_half():
  """Window 8, stride 4: prediction p < 8 reads tokens [0, p]; a later one reads from the
  start of the window whose second half holds it, so 4 to 7 symbols of past."""
  model_config, module, params = _model('gpt', context=8)
  tokens = _tokens(30, seed=4)
  expected = []
  for p in range(29):
    start = 0 if p < 8 else 4 * (p // 4 - 1)
    assert 4 <= p - start < 8 or p < 8
    expected.append(_nll_from_zero(module, params, model_config, tokens[start:p + 1],
                                   tokens[start + 1:p + 2])[-1])
  step = jax.jit(steps.make_eval_step(module))
  result = evaluate_lib.evaluate_protocol(step, params, model_config, tokens,
                                          _eval_config(window=8), 'stream')
  assert result['chars'] == 29
  np.testing.assert_allclose(result['loss'], np.mean(expected), rtol=1e-5)
  windows = evaluate_lib.evaluate_protocol(step, params, model_config, tokens,
                                           _eval_config(window=8), 'windows')
  assert windows['loss'] != pytest.approx(result['loss'], abs=1e-6)


def test_evaluate_names_the_primary_protocol_and_reports_both():
  model_config, module, params = _model('lstm', hidden_size=16)
  tokens = _tokens(60, seed=5)
  step = jax.jit(steps.make_eval_step(module))
  for primary, other in (('stream', 'windows'), ('windows', 'stream')):
    result = evaluate_lib.evaluate(step, params, model_config, tokens,
                                   _eval_config(protocol=primary))
    assert result['protocol'] == primary and result['loss'] == result[primary]['loss']
    assert other in result and result[other]['chars'] == result[primary]['chars'] == 59
  only = evaluate_lib.evaluate(step, params, model_config, tokens,
                               _eval_config(both_protocols=False))
  assert 'windows' not in only and only['loss'] == only['stream']['loss']
  assert evaluate_lib.by_protocol('val', result) == {
      'val_loss_stream': result['stream']['loss'], 'val_loss_windows': result['windows']['loss'],
      'val_loss_windows_stderr': result['windows']['stderr']}


@pytest.mark.parametrize('variant, fields, message', [
    ('lstm', {'protocol': 'sliding'}, "unknown eval.protocol 'sliding'; use one of stream, windows"),
    ('lstm', {'window': 0}, 'eval.window must be at least 1'),
    ('gpt', {'window': 64}, "eval.window=64 is longer than the model's context of 32 tokens; "
                            'set --config.eval.window=32 or less'),
])
def test_bad_eval_config_is_one_error(variant, fields, message):
  model_config, _, _ = _model(variant)
  with pytest.raises(SeqlabError, match=message.replace('.', r'\.').replace('(', r'\(')):
    evaluate_lib.check_config(_eval_config(**fields), model_config)


@pytest.mark.slow  # trains, or starts JAX in subprocesses
def test_bad_eval_protocol_from_the_command_line(text_file):
  result = run_command('--config', 'configs/shakespeare.py:smoke', f'--config.data.path={text_file}',
                       '--config.eval.protocol=window', '--workdir', str(text_file.parent / 'run'))
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      "error: unknown eval.protocol 'window'; use one of stream, windows")
  assert not (text_file.parent / 'run' / 'checkpoints').exists()


@pytest.mark.slow  # trains, or starts JAX in subprocesses
def test_a_run_reports_both_protocols(tmp_path, text_file):
  """results.json and TensorBoard carry both protocols under their names; eval.protocol picks
  val_loss (and the best checkpoint); the equal-compute axes are logged at every evaluation."""
  config = tiny_config(text_file, **{'train.num_steps': 12, 'eval.every_steps': 4,
                                     'eval.window': 16, 'eval.protocol': 'windows',
                                     'log.every_steps': 2, 'data.test_fraction': 0.1})
  results = train.train_and_evaluate(config, tmp_path / 'run')
  on_disk = json.loads((tmp_path / 'run' / 'results.json').read_text())
  assert on_disk['val_loss_by_position'] == pytest.approx(results['val_loss_by_position'])
  assert on_disk['val_loss_windows'] == pytest.approx(results['val_loss_windows'])
  assert results['eval_protocol'] == 'windows' and results['eval_window'] == 16
  assert results['val_loss'] == results['val_loss_windows'] != results['val_loss_stream']
  assert results['test_loss'] == results['test_loss_windows'] != results['test_loss_stream']
  assert 0 < results['val_loss_windows_stderr'] < 0.5
  assert len(results['val_loss_by_position']) == 16
  assert results['best_val_loss'] == pytest.approx(min(v for _, v in scalars(tmp_path / 'run', 'val/loss')))
  run = tmp_path / 'run'
  assert [s for s, _ in scalars(run, 'val/loss_stream')] == [4, 8, 12]
  assert [v for _, v in scalars(run, 'val/loss')] == pytest.approx(
      [v for _, v in scalars(run, 'val/loss_windows')])
  seconds = [v for _, v in scalars(run, 'val/train_seconds')]
  assert 0 < seconds[0] < seconds[1] < seconds[2] == pytest.approx(results['train_time'])
  per_char = results['flops_per_char']
  assert per_char > 0  # its count is tested in test_bench and below
  chars = config.data.batch_size * config.data.seq_len
  assert [v for _, v in scalars(run, 'val/train_flops')] == pytest.approx(
      [4 * chars * per_char, 8 * chars * per_char, 12 * chars * per_char])


def test_flops_per_char_of_the_lstm_counts_its_matrices():
  """2 x 16 LSTM, vocabulary 11, one-hot input: kernel_hh 16x64 (x2), layer 1's kernel_ih 16x64,
  decoder 16x11 -> 6 x (3 x 1024 + 176) FLOPs per character."""
  config = shakespeare.get_config('smoke')
  config.model.hidden_size, config.model.num_layers = 16, 2
  assert flops.per_char(registry.config_of(config.model, V))['total'] == 6 * (3 * 1024 + 176)


PRE_PROTOCOL_RUN = pathlib.Path(__file__).parent / 'fixtures' / 'pre_zoo_run'  # eval: no protocol


@pytest.mark.slow  # trains, or starts JAX in subprocesses
def test_score_a_run_made_before_the_protocols(tmp_path):
  """`seqlab.score` on a run whose config has no eval.protocol/window: its stream loss is the
  val loss the run logged at that step; windows of 256 and of 32 differ."""
  logged = dict(scalars(PRE_PROTOCOL_RUN, 'val/loss'))[10]
  out = {}
  for window in (None, 32):
    path = tmp_path / f'{window}.json'
    args = ['--workdir', PRE_PROTOCOL_RUN, '--checkpoint', 'latest', '--json', path]
    result = run_command(*args, *(['--window', str(window)] if window else []),
                         module='seqlab.score')
    assert result.returncode == 0, result.stderr[-2000:]
    assert '| stream |' in result.stdout and f'| windows of {window or 256} |' in result.stdout
    out[window] = json.loads(path.read_text())
  assert out[None]['step'] == 10 and out[None]['window'] == 256 and out[32]['window'] == 32
  assert out[None]['stream']['loss'] == pytest.approx(logged, rel=1e-5)
  assert out[32]['stream']['loss'] == out[None]['stream']['loss']
  assert out[32]['windows']['chars'] == out[None]['windows']['chars'] == out[None]['chars']
  assert len(out[None]['windows']['by_position']) == 256
  assert out[32]['windows']['loss'] != pytest.approx(out[None]['windows']['loss'], abs=1e-4)


@pytest.mark.parametrize('args, message', [
    (['--window', '0'], 'error: --window must be >= 1, got 0'),
    (['--num_streams', '0'], 'error: --num_streams must be >= 1, got 0'),
])
def test_score_bad_options_are_one_error(args, message):
  result = run_command('--workdir', PRE_PROTOCOL_RUN, *args, module='seqlab.score')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == message


def test_the_train_loop_runs_at_most_max_in_flight_steps_ahead(monkeypatch):
  """Unbounded, steps dispatched ahead of a CPU split into 2 devices could deadlock in an
  all-reduce (a 0.8M LSTM run hung after 6,250 steps): the loop waits for the step dispatched
  MAX_IN_FLIGHT steps ago, and for nothing else but the first (which starts the clock)."""
  from seqlab import evaluate  # pylint: disable=g-import-not-at-top
  from seqlab import loop  # pylint: disable=g-import-not-at-top
  waited = []
  monkeypatch.setattr(loop.jax, 'block_until_ready', lambda x: waited.append(x) or x)
  pending = loop.PendingMetrics(chars_per_step=1)
  for step in range(20):
    pending.add(step, 0.0)
  ahead = evaluate.MAX_IN_FLIGHT
  assert waited == [0] + list(range(20 - ahead))
