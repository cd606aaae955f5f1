"""Shared fixtures and helpers. Tests never use the network: named datasets come from
$SEQLAB_DATA_DIR, which defaults here to ../shared/data beside the checkout.

Two tiers: `python -m pytest -q` runs everything; `-m "not slow"` leaves out the tests
marked `slow` (end-to-end runs, subprocesses, trainings of more than a few steps).

Helpers (import them with `from conftest import ...`):
  command / run_command / start_command   `python launch.py ...`, `python -m MODULE ...` or
                                          `python -c CODE` in a subprocess, in the repository root
  events / scalars                        a run directory's TensorBoard events, as TensorBoard
                                          reads them
  final_params / final_state              a run's checkpoint, restored onto this process's device
  random_params                           random parameters of a model, without compiling its init
  tiny_config / tiny_zoo_config           a smoke config (shakespeare.py, or a zoo variant) on a
                                          small text, tinier and shorter
"""

import atexit
import os
import pathlib
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault('SEQLAB_DATA_DIR', str(ROOT.parent / 'shared' / 'data'))
# Encoded corpora (seqlab.token_cache) go to a scratch folder, never the user's cache; each test
# also gets its own (below), module- and session-scoped fixtures share this one.
os.environ['SEQLAB_CACHE_DIR'] = tempfile.mkdtemp(prefix='seqlab-test-token-cache-')
atexit.register(shutil.rmtree, os.environ['SEQLAB_CACHE_DIR'], ignore_errors=True)

# On GPUs, JAX's float32 matmuls default to TF32; the equivalence tests compare at float32
# tolerances, so they ask for full float32 matmuls (no effect on CPU).
jax.config.update('jax_default_matmul_precision', 'float32')

from configs import shakespeare  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(autouse=True)
def _own_token_cache(tmp_path_factory, monkeypatch):
  """Each test encodes corpora into its own cache (seqlab.token_cache), never the user's."""
  monkeypatch.setenv('SEQLAB_CACHE_DIR', str(tmp_path_factory.mktemp('token-cache')))


# What tiny_config changes in the smoke config. eval.window == eval.seq_len: both protocols
# run the same (4, 16) evaluation step, compiled once.
TINY = {'data.test_fraction': 0.0, 'model.hidden_size': 16, 'data.batch_size': 4,
        'data.seq_len': 8, 'eval.num_streams': 4, 'eval.seq_len': 16, 'eval.window': 16,
        'log.sample_length': 20}


def tiny_config(path, **overrides):
  """The smoke config on a given text file, with dotted-key overrides."""
  config = shakespeare.get_config('smoke')
  config.data.path = str(path)
  for key, value in {**TINY, **overrides}.items():
    group, field = key.split('.')
    config[group][field] = value
  return config


def tiny_zoo_config(variant: str, text_file, **overrides):
  """`configs/zoo.py:VARIANT,smoke` on `text_file`, smaller and shorter (16 steps of 4 x 8,
  evaluated and checkpointed at 8 and 16, no sample during training), with dotted overrides.
  A model with a window keeps its smoke context; its batches and evaluation windows fit in it."""
  from configs import zoo  # pylint: disable=g-import-not-at-top
  from seqlab.models import registry  # pylint: disable=g-import-not-at-top
  config = zoo.get_config(f'{variant},smoke')
  config.data.path = str(text_file)
  fields = {'data.test_fraction': 0.0, 'data.batch_size': 4, 'data.seq_len': 8,
            'eval.num_streams': 4, 'eval.seq_len': 16, 'eval.window': 16,
            'log.sample_length': 20, 'train.num_steps': 16, 'eval.every_steps': 8,
            'log.every_steps': 1, 'log.checkpoint_every_steps': 8, 'log.sample_steps': (),
            'log.sample_every_steps': 1000, 'log.novelty_num_samples': 0}
  window = registry.window(registry.config_of(config.model, vocab_size=1))
  if window is not None:  # the smoke context is 32: the KV cache's append path runs too
    fields['data.seq_len'] = min(fields['data.seq_len'], window)
    fields['eval.window'] = fields['eval.seq_len'] = min(fields['eval.window'], window)
  for key, value in {**fields, **overrides}.items():
    group, field = key.split('.')
    config[group][field] = value
  return config


def write_corpus(path: pathlib.Path) -> pathlib.Path:
  """A small corpus with structure a model can learn quickly (what `text_file` holds)."""
  lines = [f'{name}: the {thing} is {adj}.\n' for name in ('ANNA', 'BORIS', 'CLEO')
           for thing in ('cat', 'sea', 'moon', 'road') for adj in ('red', 'calm', 'old')]
  path.write_text(''.join(lines) * 8)
  return path


@pytest.fixture
def text_file(tmp_path):
  return write_corpus(tmp_path / 'corpus.txt')


@pytest.fixture(scope='session')
def smoke_run(tmp_path_factory):
  """A finished `configs/shakespeare.py:smoke` run on the real corpus (trained once, ~10-20 s:
  only slow tests use it)."""
  from seqlab import train  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp('smoke') / 'run'
  train.train_and_evaluate(shakespeare.get_config('smoke'), workdir)
  return workdir


# --- Subprocesses. `launch.py` runs by path and `python -m` from the repository root; seqlab
# itself is installed (`pip install -e .`), so no PYTHONPATH is needed.

def command(*args, module: str | None = None, code: str | None = None) -> list[str]:
  """The argv of `python launch.py ARGS`, or `python -m MODULE ARGS`, or `python -c CODE ARGS`."""
  if module is not None:
    head = ['-m', module]
  elif code is not None:
    head = ['-c', code]
  else:
    head = [str(ROOT / 'launch.py')]
  return [sys.executable, *head, *map(str, args)]


def command_env(changes: dict | None = None) -> dict:
  """This process's environment with `changes` (a value of None removes the variable)."""
  env = dict(os.environ)
  for name, value in (changes or {}).items():
    if value is None:
      env.pop(name, None)
    else:
      env[name] = str(value)
  return env


def run_command(*args, module: str | None = None, code: str | None = None,
                env: dict | None = None, cwd=ROOT, timeout: float = 300,
                text: bool = True) -> subprocess.CompletedProcess:
  """Runs `command(...)` to the end in the repository root; stdout and stderr captured.
  `env`: changes to this process's environment (see command_env)."""
  return subprocess.run(command(*args, module=module, code=code), cwd=cwd,
                        env=command_env(env), capture_output=True, text=text, timeout=timeout,
                        check=False)


def start_command(*args, module: str | None = None, code: str | None = None,
                  env: dict | None = None, cwd=ROOT, stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE) -> subprocess.Popen:
  """Starts `command(...)` in the repository root (text pipes); the caller waits for it."""
  return subprocess.Popen(  # pylint: disable=consider-using-with
      command(*args, module=module, code=code), cwd=cwd, env=command_env(env), stdout=stdout,
      stderr=stderr, text=True)


_PORTS_GIVEN = set()


def free_port() -> int:
  """A TCP port free on 127.0.0.1, for a server a test starts and must tell its port in advance.

  Not one from bind(('127.0.0.1', 0)): that comes from the kernel's ephemeral range, where every
  outgoing connection and every other bind to port 0 takes its port too, so it can be handed
  out again before the server binds it, and the server fails to start. This one is drawn
  between 20000 (above Ray's worker ports, 10002-19999) and the ephemeral range."""
  try:
    low = int(pathlib.Path('/proc/sys/net/ipv4/ip_local_port_range').read_text().split()[0])
  except (OSError, ValueError, IndexError):
    low = 32768  # Linux's default
  draw = random.SystemRandom()
  for _ in range(200 if low > 20_000 else 0):
    port = draw.randrange(20_000, low)
    if port in _PORTS_GIVEN:
      continue
    with socket.socket() as s:
      try:
        s.bind(('127.0.0.1', port))
      except OSError:
        continue  # taken
    _PORTS_GIVEN.add(port)
    return port
  with socket.socket() as s:  # no range below the ephemeral one: the kernel's choice
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


# --- Run directories.

def events(run_dir):
  """The TensorBoard events of a run directory, every value kept, read as TensorBoard reads
  them (which applies the purges written on resume and rollback)."""
  # pylint: disable-next=g-import-not-at-top
  from tensorboard.backend.event_processing import event_accumulator
  accumulator = event_accumulator.EventAccumulator(
      str(run_dir), size_guidance={'scalars': 0, 'tensors': 0})
  accumulator.Reload()
  return accumulator


def scalars(run_dir, tag: str) -> list[tuple[int, float]]:
  """[(step, value)] of one scalar tag of a run directory."""
  return [(e.step, e.value) for e in events(run_dir).Scalars(tag)]


def final_params(run_dir, which: str = 'latest'):
  """The parameters of checkpoint `which` ('latest', 'best' or a step) of a run directory, as
  analysis loads them (seqlab.run.load), on this process's first device."""
  from seqlab.run import load  # pylint: disable=g-import-not-at-top
  return load.load_run(run_dir, which).params


def final_state(run_dir, which: str = 'latest'):
  """The whole TrainState (step, params, optimizer state, carry, rng) of the newest checkpoint
  in `checkpoints/WHICH/`, shaped by the run's own config.json, on this process's device."""
  from seqlab import data, optim, steps  # pylint: disable=g-import-not-at-top
  from seqlab.models import char_rnn  # pylint: disable=g-import-not-at-top
  from seqlab.run import checkpoint, load  # pylint: disable=g-import-not-at-top
  run_dir = pathlib.Path(run_dir)
  config = load.load_config(run_dir)
  vocab = data.Vocabulary.load(run_dir / data.VOCAB_FILENAME)
  model_config = char_rnn.ModelConfig.from_config(config.model, vocab.size)
  optimizer = optim.make_optimizer(
      config.optim, optim.make_schedule(config.optim, config.train.num_steps, 1))
  like = jax.eval_shape(lambda: steps.init_state(model_config, optimizer,
                                                 config.data.batch_size, config.seed))
  (step,) = checkpoint.steps_on_disk(run_dir, which)[-1:]
  state, _ = checkpoint.read(run_dir / 'checkpoints' / which / str(step), like,
                             sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  return state


def random_params(init_fn, *args, seed: int = 0, bias_scale: float = 0.3):
  """Random float32 parameters shaped like `init_fn(key, *args)['params']` (a Flax module's
  `init`): kernels normal / sqrt(fan-in), everything else normal x `bias_scale`.

  The shapes come from tracing the init (jax.eval_shape), so nothing is compiled: an eager
  Flax init compiles every random and QR op of every new shape (seconds per model on CPU).
  """
  shapes = jax.eval_shape(init_fn, jax.random.PRNGKey(0), *args)['params']
  rng = np.random.default_rng(seed)

  def draw(leaf):
    scale = 1 / np.sqrt(leaf.shape[0]) if len(leaf.shape) == 2 else bias_scale
    return jax.numpy.asarray(rng.normal(scale=scale, size=leaf.shape), leaf.dtype)
  return jax.tree.map(draw, shapes)


# --- Sweeps (tests/test_sweep.py, test_ray.py, test_imports.py).

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
