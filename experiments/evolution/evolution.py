"""The post's "evolution of samples": what the model writes at iterations 100 ... 2000.

  python -m experiments.evolution.evolution [--workdir runs/evolution] [--config_variant cpu]

Trains `configs/shakespeare.py:<variant>` up to step 2000 (the run stops there
like a preempted one, so re-running the launch.py command on the same workdir
finishes it with the exact trajectory of an uninterrupted run) and copies the
run's samples.md, written during training at steps 100, 300, 500, 700, 1200 and
2000, to experiments/evolution/samples.md.
"""

import pathlib
import shutil

from absl import app
from absl import flags
from absl import logging

from configs import shakespeare
from seqlab import train

ROOT = pathlib.Path(__file__).resolve().parents[2]

_WORKDIR = flags.DEFINE_string('workdir', 'runs/evolution', 'Run directory.')
_VARIANT = flags.DEFINE_string('config_variant', 'cpu', 'Variant of configs/shakespeare.py.')
_LAST_STEP = flags.DEFINE_integer('last_step', 2000, 'Stop after this step.')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = shakespeare.get_config(_VARIANT.value)
  workdir = pathlib.Path(_WORKDIR.value)
  train.train_and_evaluate(config, workdir, stop_at_step=_LAST_STEP.value)
  target = ROOT / 'experiments' / 'evolution' / 'samples.md'
  shutil.copyfile(workdir / 'samples.md', target)
  print(f'wrote {target}')


if __name__ == '__main__':
  app.run(main)
