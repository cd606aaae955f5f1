"""Shared fixtures. Tests never use the network: named datasets come from
$SEQLAB_DATA_DIR, which defaults here to ../shared/data beside the checkout."""

import atexit
import os
import pathlib
import shutil
import sys
import tempfile
import time

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault('SEQLAB_DATA_DIR', str(ROOT.parent / 'shared' / 'data'))
# Encoded corpora (seqlab.token_cache) go to a scratch folder, never the user's cache; each test
# also gets its own (below), module- and session-scoped fixtures share this one.
os.environ['SEQLAB_CACHE_DIR'] = tempfile.mkdtemp(prefix='seqlab-test-token-cache-')
atexit.register(shutil.rmtree, os.environ['SEQLAB_CACHE_DIR'], ignore_errors=True)

# On GPUs, JAX's float32 matmuls default to TF32; the equivalence tests compare at float32
# tolerances, so they ask for full float32 matmuls (no effect on CPU).
jax.config.update('jax_default_matmul_precision', 'float32')

from configs import shakespeare  # pylint: disable=g-import-not-at-top


@pytest.fixture(autouse=True)
def _own_token_cache(tmp_path_factory, monkeypatch):
  """Each test encodes corpora into its own cache (seqlab.token_cache), never the user's."""
  monkeypatch.setenv('SEQLAB_CACHE_DIR', str(tmp_path_factory.mktemp('token-cache')))


# What tiny_config changes in the smoke config.
TINY = {'data.test_fraction': 0.0, 'model.hidden_size': 16, 'data.batch_size': 4,
        'data.seq_len': 8, 'eval.num_streams': 4, 'eval.seq_len': 16, 'log.sample_length': 20}


def tiny_config(path, **overrides):
  """The smoke config on a given text file, with dotted-key overrides."""
  config = shakespeare.get_config('smoke')
  config.data.path = str(path)
  for key, value in {**TINY, **overrides}.items():
    group, field = key.split('.')
    config[group][field] = value
  return config


@pytest.fixture
def text_file(tmp_path):
  """A small corpus with structure a model can learn quickly."""
  lines = [f'{name}: the {thing} is {adj}.\n' for name in ('ANNA', 'BORIS', 'CLEO')
           for thing in ('cat', 'sea', 'moon', 'road') for adj in ('red', 'calm', 'old')]
  path = tmp_path / 'corpus.txt'
  path.write_text(''.join(lines) * 8)
  return path


@pytest.fixture(scope='session')
def smoke_run(tmp_path_factory):
  """A finished `configs/shakespeare.py:smoke` run on the real corpus (trained once, ~10 s)."""
  from seqlab import train  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp('smoke') / 'run'
  train.train_and_evaluate(shakespeare.get_config('smoke'), workdir)
  return workdir


def write_sweep_config(tmp_path, text_file, sweep_code):
  """A config file (tiny.py) of a short tiny model on `text_file`, whose get_sweep returns
  `sweep_code`."""
  path = tmp_path / 'tiny.py'
  path.write_text(f'''
from configs import shakespeare
from seqlab.sweeps import declare as sweep

def get_config(arg=None):
  config = shakespeare.get_config('smoke')
  config.data.path = {str(text_file)!r}
  config.data.test_fraction = 0.1
  config.model.hidden_size = 16
  config.data.batch_size = 8
  config.train.num_steps = 12
  config.eval.every_steps = 6
  config.log.checkpoint_every_steps = 6
  config.log.novelty_num_samples = 0
  return config

def get_sweep(arg=None):
  return {sweep_code}
''')
  return path


# A sweep long enough to be stopped mid-trial: 3000 steps, checkpoints only at 1000s.
LONG_RUN = ['--config.train.num_steps=3000', '--config.log.every_steps=10',
            '--config.log.checkpoint_every_steps=1000', '--config.eval.every_steps=1000']


def wait_for_log_line(logs_dir, text: str, timeout: float = 240) -> None:
  """Waits until some log in `logs_dir` (a sweep's logs/) contains `text`."""
  deadline = time.time() + timeout
  while time.time() < deadline and not (
      logs_dir.is_dir() and any(text in p.read_text() for p in logs_dir.iterdir())):
    time.sleep(0.2)
