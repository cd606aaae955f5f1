"""A run trained on one topology loads on any other: sampling, neurons, evaluation, resume.

Runs are trained by `launch.py` in their own processes on 2 CPU devices
(`parallel.cpu_devices=2`, as `:cpu` does), on 4 forced devices, and on 1; they
are then read in processes with another device count. The checkpoint reader is
the same for training and analysis (`seqlab.run.checkpoint.read`).
"""

import json
import subprocess

import jax
import numpy as np
import pytest

from conftest import run_command
from seqlab import evaluate as evaluate_lib
from seqlab import steps
from seqlab.run import load as runs

pytestmark = pytest.mark.slow

SHORT = ['--config', 'configs/shakespeare.py:smoke', '--config.train.num_steps=20',
         '--config.log.novelty_num_samples=0']


def _python(*args, module: str | None = None, code: str | None = None,
            forced_devices: int | None = None, check: bool = True):
  """`python launch.py ARGS` (or `-m MODULE`, `-c CODE`) on `forced_devices` CPU devices, or on
  JAX's default without XLA_FLAGS."""
  xla_flags = (f'--xla_force_host_platform_device_count={forced_devices}' if forced_devices
               else None)
  result = run_command(*args, module=module, code=code, env={'XLA_FLAGS': xla_flags},
                       timeout=600)
  if check:
    assert result.returncode == 0, result.stderr[-3000:]
  return result


def _train(workdir, *overrides, forced_devices=None):
  return _python(*SHORT, f'--workdir={workdir}', *overrides, forced_devices=forced_devices)


def _sample(workdir, forced_devices=None) -> str:
  return _python('--workdir', workdir, '--prime', 'ROMEO:', '--length', '80', '--seed', '7',
                 '--checkpoint', 'latest', module='seqlab.sample',
                 forced_devices=forced_devices).stdout


_SAVED_PARAMS = """
import sys, numpy as np, jax, orbax.checkpoint as ocp
# The checkpoint read on the topology it was saved from, without a target: what orbax stored.
state = ocp.StandardCheckpointer().restore(sys.argv[1] + '/state')
leaves = jax.tree_util.tree_leaves_with_path(state['params'])
np.savez(sys.argv[2], **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})
"""


@pytest.fixture(scope='module')
def two_device_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('portability') / 'two-devices'
  result = _train(workdir, '--config.parallel.cpu_devices=2')
  assert '2 devices' in result.stdout or 'devices' in result.stdout, result.stdout[-2000:]
  return workdir


def _assert_loads_like_saved(workdir, saved_on_devices, tmp_path):
  """Parameters read here (1 device) are bit-identical to what the saving topology reads."""
  assert len(jax.devices()) == 1
  run = runs.load_run(workdir, 'latest')
  step_dir = workdir / 'checkpoints' / 'latest' / str(run.step)
  out = tmp_path / 'saved.npz'
  _python(step_dir, out, code=_SAVED_PARAMS, forced_devices=saved_on_devices)
  saved = np.load(out)
  loaded = {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(run.params)}
  assert sorted(saved.files) == sorted(loaded)
  for key in loaded:
    assert loaded[key].dtype == saved[key].dtype and np.array_equal(loaded[key], saved[key]), key
  assert all(len(x.devices()) == 1 for x in jax.tree.leaves(run.params))
  return run


def _val_loss_here(run) -> float:
  """The loaded run's val loss, evaluated on this process's one device."""
  config = run.config
  eval_step = jax.jit(steps.make_eval_step(run.model))
  corpus = runs.load_corpus(run)
  return evaluate_lib.evaluate(eval_step, run.params, run.model.config, corpus.val,
                               config.eval, None)['loss']


def test_two_device_run_restores_samples_evaluates_on_one_device(two_device_run, tmp_path):
  run = _assert_loads_like_saved(two_device_run, 2, tmp_path)
  # Evaluation: the final val loss the 2-device run reported, from its final checkpoint.
  results = json.loads((two_device_run / 'results.json').read_text())
  assert run.step == results['steps']
  assert _val_loss_here(run) == pytest.approx(results['val_loss'], abs=2e-5)
  # Sampling: the same text on 1 device as on the topology the run was trained on.
  assert _sample(two_device_run) == _sample(two_device_run, forced_devices=2)
  assert _sample(two_device_run).count('ROMEO:') == 1


def test_two_device_run_neurons_and_resume_on_one_device(two_device_run, tmp_path):
  out = tmp_path / 'neurons'
  result = _python('--workdir', two_device_run, '--out', out, '--max_chars', '2000',
                   module='seqlab.neurons')
  assert (out / 'units.md').is_file(), result.stderr[-2000:]
  # Resume on one device: 10 more steps from the 2-device checkpoint.
  resumed = _python(*SHORT, f'--workdir={two_device_run}', '--config.parallel.cpu_devices=1',
                    '--config.train.num_steps=30')
  assert 'resuming at step 20' in resumed.stdout
  assert json.loads((two_device_run / 'results.json').read_text())['steps'] == 30


def test_four_forced_devices_run_loads_on_one(tmp_path):
  workdir = tmp_path / 'four'
  _train(workdir, '--config.parallel.cpu_devices=4')
  _assert_loads_like_saved(workdir, 4, tmp_path)
  assert _sample(workdir) == _sample(workdir, forced_devices=4)


def test_one_device_run_loads_and_resumes_on_several(tmp_path):
  workdir = tmp_path / 'one'
  _train(workdir, '--config.parallel.cpu_devices=1')
  assert _sample(workdir, forced_devices=4) == _sample(workdir)
  resumed = _python(*SHORT, f'--workdir={workdir}', '--config.train.num_steps=30',
                    '--config.parallel.cpu_devices=2')
  assert 'resuming at step 20' in resumed.stdout


def test_cpu_variant_split_run_samples(tmp_path):
  """The `:cpu` variant's device split (2 CPU devices), shrunk by `smoke`."""
  workdir = tmp_path / 'cpu-smoke'
  _python('--config', 'configs/shakespeare.py:cpu,smoke', '--config.train.num_steps=20',
          '--config.log.novelty_num_samples=0', f'--workdir={workdir}')
  assert json.loads((workdir / 'config.json').read_text())['parallel']['cpu_devices'] == 2
  result = _python('--workdir', workdir, '--prime', 'ROMEO:', '--length', '40',
                   module='seqlab.sample')
  assert result.stdout.startswith('ROMEO:') and len(result.stdout.strip()) >= 40


def test_bf16_run_loads_for_fp32_sampling(tmp_path):
  workdir = tmp_path / 'bf16'
  _train(workdir, '--config.model.matmul_dtype=bfloat16', '--config.parallel.cpu_devices=1')
  run = runs.load_run(workdir)
  assert run.model.config.matmul_dtype == 'float32'
  assert {x.dtype for x in jax.tree.leaves(run.params)} == {np.dtype('float32')}
  assert runs.load_run(workdir, matmul_dtype=None).model.config.matmul_dtype == 'bfloat16'
  assert _sample(workdir).startswith('ROMEO:')


def test_checkpoint_of_another_model_is_one_error_line(two_device_run, tmp_path):
  """A run directory whose config.json no longer matches its checkpoints."""
  copy = tmp_path / 'edited'
  subprocess.run(['cp', '-r', str(two_device_run), str(copy)], check=True)
  config = json.loads((copy / 'config.json').read_text())
  config['model']['hidden_size'] = 48
  (copy / 'config.json').write_text(json.dumps(config))
  result = _python('--workdir', copy, module='seqlab.sample', check=False)
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1, result.stderr
  assert lines[0].startswith('error: checkpoint ') and 'holds another model' in lines[0]
  assert '(32, 128)' in lines[0] or '32' in lines[0]
