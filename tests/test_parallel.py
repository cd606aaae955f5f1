"""Data parallelism: one run on 4 devices, and on 2 processes (jax.distributed over loopback),
trains like the same run on one device.

The 4 devices are CPU devices forced with XLA_FLAGS, so the runs happen in
subprocesses (`launch.py`) and the other tests keep their single device.
"""

import subprocess

import jax
import numpy as np
import pytest

from conftest import (ROOT, TINY, final_params, free_port, scalars, start_command, tiny_config,
                      write_corpus)
from seqlab.run import directory as rundir
from seqlab import train

pytestmark = pytest.mark.slow  # every test launches runs in subprocesses

# Dropout on, so the test also checks that the masks do not depend on the sharding; 8 streams,
# so the batch splits over 4 devices and evaluation (4 streams) does too.
OVERRIDES = {'train.num_steps': 30, 'data.batch_size': 8, 'model.dropout': 0.2,
             'log.every_steps': 1, 'eval.every_steps': 15, 'log.checkpoint_every_steps': 15,
             'log.sample_steps': (15,)}


def _flags(text_file) -> list[str]:
  """tiny_config(text_file, **OVERRIDES) as command-line overrides of the smoke config."""
  flags = [f'--config.data.path={text_file}']
  for key, value in {**TINY, **OVERRIDES}.items():
    value = ','.join(map(str, value)) if isinstance(value, tuple) else value
    flags.append(f'--config.{key}={value}')
  return flags


def _launch(workdir, text_file, devices_per_process: int | None, extra_env=None,
            extra_flags=()):
  """launch.py in a subprocess; `devices_per_process` CPU devices forced with XLA_FLAGS."""
  forced = f'--xla_force_host_platform_device_count={devices_per_process}' \
      if devices_per_process else None
  return start_command(
      '--config', ROOT / 'configs/shakespeare.py:smoke', '--workdir', workdir,
      *_flags(text_file), *extra_flags,
      env={'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': forced, **(extra_env or {})},
      stderr=subprocess.STDOUT)


def _finish(process, timeout=300) -> str:
  try:
    out, _ = process.communicate(timeout=timeout)
  finally:
    process.kill()  # a hung collective must not outlive the test
  assert process.returncode == 0, out[-3000:]
  return out


def _losses(workdir):
  return {tag: scalars(workdir, tag) for tag in ('train/loss', 'val/loss')}


@pytest.fixture(scope='module')
def one_device_run(tmp_path_factory):
  """The reference: the same run in this process, on its one CPU device."""
  assert jax.device_count() == 1
  root = tmp_path_factory.mktemp('parallel')
  text_file = write_corpus(root / 'corpus.txt')
  config = tiny_config(text_file, **OVERRIDES)
  results = train.train_and_evaluate(config, root / 'one')
  return text_file, config, results, _losses(root / 'one'), final_params(root / 'one')


def _assert_same_run(one_device_run, workdir, results):
  _, _, ref_results, ref_losses, ref_params = one_device_run
  losses = _losses(workdir)
  for tag, ref in ref_losses.items():
    assert [s for s, _ in losses[tag]] == [s for s, _ in ref]
    np.testing.assert_allclose([v for _, v in losses[tag]], [v for _, v in ref], rtol=2e-5)
  np.testing.assert_allclose(results['val_loss'], ref_results['val_loss'], rtol=2e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               final_params(workdir), ref_params)


def test_four_devices_train_like_one(one_device_run, tmp_path):
  text_file = one_device_run[0]
  out = _finish(_launch(tmp_path / 'four', text_file, devices_per_process=4))
  assert '4 cpu devices' in out
  results = rundir.load_json(tmp_path / 'four' / 'results.json')
  _assert_same_run(one_device_run, tmp_path / 'four', results)


def test_batch_must_divide_by_the_devices(one_device_run, tmp_path):
  process = _launch(tmp_path / 'bad', one_device_run[0], devices_per_process=4,
                    extra_flags=['--config.data.batch_size=6'])
  out, _ = process.communicate(timeout=120)
  assert process.returncode == 2
  assert out.strip().splitlines()[-1] == (
      'error: data.batch_size=6 does not divide by the 4 devices of the run; use a multiple of '
      '4 or set parallel.cpu_devices')
  assert not (tmp_path / 'bad').exists()


def test_cpu_devices_split_the_host_and_train_like_one_device(one_device_run, tmp_path):
  """`parallel.cpu_devices=2` (no XLA_FLAGS): the run itself splits the CPU into 2 devices."""
  out = _finish(_launch(tmp_path / 'split', one_device_run[0], devices_per_process=None,
                        extra_flags=['--config.parallel.cpu_devices=2']))
  assert '2 cpu devices' in out
  results = rundir.load_json(tmp_path / 'split' / 'results.json')
  _assert_same_run(one_device_run, tmp_path / 'split', results)


def test_negative_cpu_devices_is_one_error_line(one_device_run, tmp_path):
  process = _launch(tmp_path / 'bad', one_device_run[0], devices_per_process=None,
                    extra_flags=['--config.parallel.cpu_devices=-2'])
  out, _ = process.communicate(timeout=120)
  assert process.returncode == 2
  assert out.strip().splitlines()[-1] == (
      'error: parallel.cpu_devices must be >= 0 (0: one per core on a host without an '
      'accelerator), got -2')
  assert not (tmp_path / 'bad').exists()


def test_two_processes_train_like_one_device(one_device_run, tmp_path):
  """jax.distributed on loopback (gloo): 2 processes x 2 devices; process 0 writes the files."""
  workdir = tmp_path / 'two-hosts'
  address = f'127.0.0.1:{free_port()}'
  processes = [_launch(workdir, one_device_run[0], devices_per_process=2,
                       extra_env={'JAX_COORDINATOR_ADDRESS': address, 'JAX_NUM_PROCESSES': '2',
                                  'JAX_PROCESS_ID': str(i)})
               for i in range(2)]
  outs = [_finish(p) for p in processes]
  assert '4 cpu devices in 2 processes' in outs[0]
  assert 'seqlab:' not in outs[1] and 'done:' not in outs[1]  # only process 0 prints
  event_files = list(workdir.glob('events.out.tfevents.*'))
  assert len(event_files) == 1, event_files
  samples = (workdir / 'samples.md').read_text()
  assert samples.count('## step 15') == 1 and samples.count('## step 20') == 1
  _assert_same_run(one_device_run, workdir, rundir.load_json(workdir / 'results.json'))


def test_a_one_device_checkpoint_resumes_on_four_devices(one_device_run, tmp_path):
  """Stopped at step 15 on one device, finished on 4: the same run as one device throughout."""
  text_file, config = one_device_run[:2]
  workdir = tmp_path / 'moved'
  assert train.train_and_evaluate(config, workdir, stop_at_step=15) is None
  out = _finish(_launch(workdir, text_file, devices_per_process=4))
  assert 'resuming at step 15' in out and '4 cpu devices' in out
  _assert_same_run(one_device_run, workdir, rundir.load_json(workdir / 'results.json'))

