"""NaN/Inf during training: stop with the step named, or roll back and lower the learning rate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import final_params, scalars, tiny_config
from seqlab.run import checkpoint
from seqlab import steps
from seqlab import train
from seqlab.errors import NonFiniteLossError

pytestmark = pytest.mark.slow  # each test trains (and trains again by hand)

LR = 1e-2
OVERRIDES = {'train.num_steps': 12, 'optim.schedule': 'constant', 'optim.learning_rate': LR,
             'log.every_steps': 4, 'log.checkpoint_every_steps': 5, 'eval.every_steps': 6,
             'log.sample_every_steps': 1000, 'log.sample_steps': (), 'train.on_nonfinite': 'rollback',
             'train.max_rollbacks': 2, 'log.novelty_num_samples': 0}


def _poison_step(monkeypatch, bad_step: int, only_at_full_lr: bool) -> None:
  """Makes the train step turn params and loss into NaN when it reaches `bad_step`."""
  real = steps.make_train_step

  def make_train_step(model, optimizer, schedule):
    step_fn = real(model, optimizer, schedule)

    def train_step(state, inputs, targets, reset, lr_scale=1.0):
      state, metrics = step_fn(state, inputs, targets, reset, lr_scale)
      bad = state.step == bad_step
      if only_at_full_lr:
        bad &= lr_scale == 1.0
      poison = lambda x: jnp.where(bad, jnp.nan, x)
      return (state.replace(params=jax.tree.map(poison, state.params)),
              dict(metrics, loss=poison(metrics['loss'])))
    return train_step
  monkeypatch.setattr(steps, 'make_train_step', make_train_step)


def test_rollback_continues_from_the_last_good_checkpoint_with_a_lower_rate(
    text_file, tmp_path, monkeypatch, capsys):
  config = tiny_config(text_file, **OVERRIDES)
  _poison_step(monkeypatch, bad_step=7, only_at_full_lr=True)
  results = train.train_and_evaluate(config, tmp_path / 'rolled')
  out = capsys.readouterr().out
  # Caught at the log step after the fault (8), back to the checkpoint of step 5.
  assert 'at step 7; rolled back to step 5, learning rate x0.5 (rollback 1 of 2)' in out
  assert np.isfinite(results['val_loss'])
  monkeypatch.undo()

  # The same run by hand: 5 steps at LR, then steps 6-12 at LR / 2.
  reference = tiny_config(text_file, **OVERRIDES)
  train.train_and_evaluate(reference, tmp_path / 'by_hand', stop_at_step=5)
  reference.optim.learning_rate = LR / 2
  expected = train.train_and_evaluate(reference, tmp_path / 'by_hand')
  assert results['val_loss'] == pytest.approx(expected['val_loss'], rel=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               final_params(tmp_path / 'rolled'), final_params(tmp_path / 'by_hand'))

  # TensorBoard shows each step once, in order, with the lowered rate after the rollback.
  lr = scalars(tmp_path / 'rolled', 'lr')  # with the purges of the rollback applied
  assert [s for s, _ in lr] == [4, 5, 6, 8, 10, 12]  # log, checkpoint and eval steps
  assert [v for s, v in lr if s <= 5] == pytest.approx([LR] * 2)
  assert [v for s, v in lr if s > 5] == pytest.approx([LR / 2] * 4)
  loss_steps = [s for s, _ in scalars(tmp_path / 'rolled', 'train/loss')]
  assert loss_steps == sorted(set(loss_steps))


def test_rollbacks_are_limited_and_nan_params_are_never_saved(text_file, tmp_path, monkeypatch):
  config = tiny_config(text_file, **OVERRIDES)
  _poison_step(monkeypatch, bad_step=7, only_at_full_lr=False)  # fails at any rate
  with pytest.raises(NonFiniteLossError, match=r'at step 7 after 2 rollbacks.*step 5\) is kept'):
    train.train_and_evaluate(config, tmp_path / 'run')
  assert checkpoint.steps_on_disk(tmp_path / 'run') == [5]
  assert checkpoint.steps_on_disk(tmp_path / 'run', 'best') == [6]  # evaluated before the fault
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(final_params(tmp_path / 'run')))


def test_a_nan_before_the_first_checkpoint_restarts_from_the_initial_state(
    text_file, tmp_path, monkeypatch, capsys):
  config = tiny_config(text_file, **OVERRIDES)
  _poison_step(monkeypatch, bad_step=2, only_at_full_lr=True)
  results = train.train_and_evaluate(config, tmp_path / 'run')
  assert 'at step 2; rolled back to step 0, learning rate x0.5' in capsys.readouterr().out
  assert np.isfinite(results['val_loss']) and results['steps'] == 12
