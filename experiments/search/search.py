"""Issue 18's measured study: successive halving vs running a declared search to the end.

A quasi-random search over a small LSTM on tiny Shakespeare: learning rate (log-uniform),
dropout (uniform) and a `choice` of two hidden sizes (so `--fused` trains two groups, one per
shape). The same sweep runs from separate sweep directories: every trial to the end, and with
`--early_stop=300` and `--early_stop=600` (successive halving, eta 3). experiments/search/README.md
has the commands and the measured numbers; summarize.py reads the sweep directories.
"""

from configs import shakespeare
from seqlab import sweeps

NUM_TRIALS = 12
NUM_STEPS = 5400
EVAL_EVERY = 300  # divides the halving rungs (--early_stop=300, eta 3: steps 300, 900, 2700)


def get_config(arg=None):
  config = shakespeare.get_config('cpu')  # 2-layer LSTM, batch 32 x seq 64, cosine schedule
  del arg
  config.model.num_layers = 2
  config.model.hidden_size = 128  # swept: 64 or 128
  config.model.dropout = 0.0  # swept
  config.optim.learning_rate = 3e-3  # swept
  config.optim.warmup_steps = 100
  config.train.num_steps = NUM_STEPS
  config.parallel.cpu_devices = 1  # the study runs on one core (taskset -c 1)
  config.eval.every_steps = EVAL_EVERY
  config.log.every_steps = 100
  config.log.checkpoint_every_steps = 900  # halving also checkpoints at each rung
  config.log.sample_steps = ()
  config.log.sample_every_steps = NUM_STEPS
  config.log.sample_length = 200
  config.log.novelty_num_samples = 0
  return config


def get_sweep(arg=None):
  del arg
  return sweeps.quasi_random(NUM_TRIALS, seed=0, **{
      'optim.learning_rate': sweeps.log_uniform(3e-4, 3e-2),
      'model.dropout': sweeps.uniform(0.0, 0.3),
      'model.hidden_size': sweeps.choice([64, 128])})
