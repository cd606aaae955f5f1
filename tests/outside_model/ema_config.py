"""A researcher's config beside their own model (ema_lm.py, outside the seqlab package).

  python launch.py --config tests/outside_model/ema_config.py --workdir runs/ema
  python launch.py --config tests/outside_model/ema_config.py:cpu --workdir runs/ema-cpu
  python launch.py --config tests/outside_model/ema_config.py --sweep --fused
  python -m seqlab.sample --workdir runs/ema

configs/shakespeare.py's smoke config (or its variants: `:cpu`), with the model replaced by
the 'ema' that ema_lm.py registers. `model.module` names that file by its path; this file does
not import it (a sweep's own process imports no JAX), every process that builds the model
does, and the run's config.json keeps the path for those that only get the run directory.
"""

import pathlib

from ml_collections import config_dict

from configs import shakespeare
from seqlab import sweeps

MODEL_FILE = pathlib.Path(__file__).resolve().with_name('ema_lm.py')


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
  config = shakespeare.get_config(arg or 'smoke')
  config.model = config_dict.ConfigDict({
      'name': 'ema', 'module': str(MODEL_FILE), 'num_layers': 2,
      'hidden_size': 256 if 'cpu' in (arg or '').split(',') else 32,
      'dropout': 0.0, 'scan': 'associative', 'matmul_dtype': 'float32'})
  config.optim.learning_rate = 5e-3
  return config


def get_sweep(arg: str | None = None) -> list[dict]:
  """Two learning rates: trials of one shape, which `--fused` trains together."""
  del arg
  return sweeps.axis('optim.learning_rate', [5e-3, 1e-2])
