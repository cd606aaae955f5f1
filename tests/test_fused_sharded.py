"""A fused group's trial axis spread over every device: 8 trials on 4 devices == 8 trials alone."""

import json

import numpy as np
import pytest

from conftest import TINY, run_command, scalars, tiny_config
from seqlab import train
from seqlab.sweeps import declare
from seqlab.sweeps import fused

OVERRIDES = {'train.num_steps': 12, 'eval.every_steps': 6, 'log.every_steps': 1,
             'log.checkpoint_every_steps': 6, 'log.novelty_num_samples': 0,
             'log.sample_steps': (6,)}
SWEEP = declare.product(declare.axis('optim.learning_rate', [3e-3, 2e-2]),
                        declare.axis('model.dropout', [0.0, 0.3]), declare.axis('seed', [0, 5]))

# Runs in a process with 4 forced CPU devices: the same 8 trials, fused.
_FUSED_ON_4 = """
import json, pathlib, sys
import jax
from configs import shakespeare
from seqlab import interrupts
from seqlab.sweeps import declare, fused
args = json.loads(sys.argv[1])
base = shakespeare.get_config('smoke')
for key, value in args['overrides'].items():
  group, field = key.split('.')
  base[group][field] = tuple(value) if isinstance(value, list) else value
trials = declare.make_trials(base, declare.product(
    declare.axis('optim.learning_rate', [3e-3, 2e-2]), declare.axis('model.dropout', [0.0, 0.3]),
    declare.axis('seed', [0, 5])))
print(json.dumps({'devices': len(jax.devices()), 'mesh': fused.trial_mesh(len(trials)).size}))
out = pathlib.Path(args['out'])
errors = fused.train_fused([(t, out / t.name) for t in trials], interrupts.StopRequest())
assert not errors, errors
"""


def test_trial_mesh_uses_the_devices_that_divide_the_trials():
  used = {k: fused.devices_used(k, 4) for k in (1, 2, 3, 4, 6, 8, 9)}
  assert used == {1: 1, 2: 2, 3: 3, 4: 4, 6: 3, 8: 4, 9: 3}
  assert fused.trial_mesh(8).devices.size == 1  # this test process has one device


@pytest.mark.slow
def test_eight_trials_fused_on_four_devices_equal_the_trials_alone(text_file, tmp_path):
  overrides = {**TINY, 'data.path': str(text_file), **OVERRIDES}  # tiny_config's, as data
  result = run_command(json.dumps({'overrides': overrides, 'out': str(tmp_path / 'fused')}),
                       code=_FUSED_ON_4,
                       env={'XLA_FLAGS': '--xla_force_host_platform_device_count=4'}, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  layout = json.loads(result.stdout.splitlines()[0])
  assert layout == {'devices': 4, 'mesh': 4}
  assert 'on 4 cpu device(s)' in result.stdout

  trials = declare.make_trials(tiny_config(text_file, **OVERRIDES), SWEEP)
  assert len(trials) == 8
  for trial in trials:
    alone = train.train_and_evaluate(trial.config, tmp_path / 'alone' / trial.name)
    together = json.loads((tmp_path / 'fused' / trial.name / 'results.json').read_text())
    for key in ('val_loss', 'best_val_loss'):
      assert together[key] == pytest.approx(alone[key], rel=2e-5), (trial.name, key)
    np.testing.assert_allclose(
        [v for _, v in scalars(tmp_path / 'fused' / trial.name, 'train/loss')],
        [v for _, v in scalars(tmp_path / 'alone' / trial.name, 'train/loss')], rtol=2e-5)
