"""Eight small trials for timing sweeps: 2 learning rates x 2 dropout rates x 2 seeds.

One shape (2x64 LSTM, batch 32, seq 64, 300 steps on tiny Shakespeare), so `--fused`
trains all eight in one compiled step. experiments/sweeps/README.md has the commands
and the measured trials per hour, sequential vs --parallel 2 vs --fused.
"""

from configs import shakespeare
from seqlab.sweeps import declare as sweep


def get_config(arg=None):
  config = shakespeare.get_config('cpu')
  config.model.hidden_size = 64
  config.train.num_steps = 300
  config.optim.warmup_steps = 30
  config.eval.every_steps = 150
  config.log.every_steps = 50
  config.log.checkpoint_every_steps = 150
  config.log.sample_steps = ()
  config.log.sample_every_steps = 300
  config.log.sample_length = 200
  config.log.novelty_num_samples = 0
  del arg
  return config


def get_sweep(arg=None):
  del arg
  return sweep.product(sweep.axis('optim.learning_rate', [2e-3, 5e-3]),
                       sweep.axis('model.dropout', [0.0, 0.2]),
                       sweep.axis('seed', [0, 1]))
