"""Fused trials (`--fused`): trained together in one vmapped step, each as if trained alone."""

import jax
import numpy as np
import pytest

from conftest import final_params, scalars, tiny_config
from seqlab.sweeps import fused
from seqlab import interrupts
from seqlab.sweeps import declare as sweep
from seqlab import train


@pytest.mark.slow
def test_fused_trials_equal_trials_trained_alone(text_file, tmp_path):
  base = tiny_config(text_file, **{'train.num_steps': 16, 'eval.every_steps': 8,
                                   'log.every_steps': 1, 'log.checkpoint_every_steps': 8,
                                   'log.novelty_num_samples': 0, 'log.sample_steps': (8,)})
  trials = sweep.make_trials(base, sweep.zipped(
      sweep.axis('optim.learning_rate', [3e-3, 2e-2]), sweep.axis('model.dropout', [0.0, 0.3]),
      sweep.axis('seed', [0, 5])))
  assert len(fused.group([(t, tmp_path / 'f' / t.name) for t in trials])) == 1
  errors = fused.train_fused([(t, tmp_path / 'fused' / t.name) for t in trials],
                             interrupts.StopRequest())
  assert errors == {}
  for trial in trials:
    alone = train.train_and_evaluate(trial.config, tmp_path / 'alone' / trial.name)
    together = tmp_path / 'fused' / trial.name
    results = train.rundir.load_json(together / 'results.json')
    for key in ('val_loss', 'best_val_loss', 'test_loss'):
      if key in alone:
        assert results[key] == pytest.approx(alone[key], rel=2e-5), (trial.name, key)
    fused_losses = scalars(together, 'train/loss')
    alone_losses = scalars(tmp_path / 'alone' / trial.name, 'train/loss')
    assert [s for s, _ in fused_losses] == list(range(1, 17))
    np.testing.assert_allclose([v for _, v in fused_losses], [v for _, v in alone_losses],
                               rtol=2e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 final_params(together), final_params(tmp_path / 'alone' / trial.name))
  # The two trials really differ (learning rate, dropout and seed reach the fused step).
  a, b = (train.rundir.load_json(tmp_path / 'fused' / t.name / 'results.json') for t in trials)
  assert a['val_loss'] != b['val_loss']


def test_trials_are_grouped_by_shape(text_file, tmp_path):
  base = tiny_config(text_file)
  trials = sweep.make_trials(base, sweep.product(
      sweep.axis('model.hidden_size', [8, 16]), sweep.axis('optim.learning_rate', [1e-3, 1e-2]),
      sweep.axis('optim.grad_clip', [0.0, 1.0, 5.0])))
  groups = fused.group([(t, tmp_path / t.name) for t in trials])
  # hidden size splits the groups, and so does clipping on/off; threshold and rate do not.
  assert sorted(len(g) for g in groups) == [2, 2, 4, 4]
  for members in groups:
    configs = [t.config for t, _ in members]
    assert len({c.model.hidden_size for c in configs}) == 1
    assert len({c.optim.grad_clip > 0 for c in configs}) == 1
