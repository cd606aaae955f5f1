"""`--sweep --executor ray` against a real Ray instance on loopback (skipped without Ray).

CI installs requirements-ray.txt, so there it runs. The test starts a Ray head
node on 127.0.0.1 itself, then also lets the sweep start its own local instance.
Each Ray instance lives in its own temporary directory ($RAY_TMPDIR), so it
never joins, and the test never stops, a Ray instance it did not start (no
`ray stop`, which stops every Ray of the user on the machine).
"""

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import (LONG_RUN, command_env, free_port, run_command, start_command,
                      wait_for_log_line, write_sweep_config)
from seqlab.run import checkpoint

pytest.importorskip('ray')
pytestmark = pytest.mark.slow
RAY = shutil.which('ray', path=os.path.dirname(sys.executable)) or shutil.which('ray')
# Loopback only: no usage statistics, no cluster token (Ray 2.5x+ asks for one by default).
RAY_ENV = {'RAY_USAGE_STATS_ENABLED': '0', 'RAY_AUTH_MODE': 'disabled'}


def _sweep(config, sweep_dir, env, *args):
  return run_command('--config', config, '--sweep', '--workdir', sweep_dir, '--executor', 'ray',
                     *args, env=env, timeout=600)


def _processes_mentioning(text: str) -> list[int]:
  """The processes whose command line contains `text` (here: a Ray temporary directory)."""
  found = []
  for proc in pathlib.Path('/proc').iterdir():
    try:
      if proc.name.isdigit() and text.encode() in (proc / 'cmdline').read_bytes():
        found.append(int(proc.name))
    except OSError:  # it has exited
      pass
  return [pid for pid in found if pid != os.getpid()]


@contextlib.contextmanager
def _own_ray_dir(sweep_dir: pathlib.Path):
  """Changes to the environment (see command_env) under which Ray instances live in a new
  temporary directory. On leaving, any process still running from that directory or for
  `sweep_dir` (a trial) is killed: new paths, so only processes of this test."""
  # Short: Ray's socket paths inside it must stay under 108 bytes.
  tmp = tempfile.mkdtemp(prefix='seqlab-ray-', dir='/tmp')
  ours = lambda: _processes_mentioning(tmp) + _processes_mentioning(str(sweep_dir))
  try:
    yield dict(RAY_ENV, RAY_TMPDIR=tmp, RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S='0')
  finally:
    deadline = time.time() + 30
    while ours() and time.time() < deadline:  # Ray's own shutdown
      time.sleep(0.5)
    for pid in ours():
      with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _ray_head(env, num_cpus: int):
  """A Ray head node on 127.0.0.1 that this test starts and stops: its address."""
  port = free_port()
  log = tempfile.TemporaryFile(mode='w+')  # pylint: disable=consider-using-with
  head = subprocess.Popen(  # pylint: disable=consider-using-with
      [RAY, 'start', '--head', '--block', '--node-ip-address=127.0.0.1', f'--port={port}',
       f'--ray-client-server-port={free_port()}', f'--dashboard-agent-listen-port={free_port()}',
       f'--num-cpus={num_cpus}', '--num-gpus=0', '--include-dashboard=false',
       '--disable-usage-stats'], env=command_env(env), stdout=log, stderr=subprocess.STDOUT,
      text=True)
  try:
    deadline = time.time() + 180
    while head.poll() is None and time.time() < deadline:
      log.seek(0)
      if 'Ray runtime started' in log.read():
        break
      time.sleep(0.5)
    log.seek(0)
    assert head.poll() is None and 'Ray runtime started' in log.read(), log.read()[-2000:]
    yield f'127.0.0.1:{port}'
  finally:
    head.terminate()  # `ray start --block` stops the processes it started on SIGTERM
    try:
      head.wait(timeout=60)
    except subprocess.TimeoutExpired:
      head.kill()
      head.wait()
    log.close()


def test_ray_sweep_runs_fails_and_resumes_like_the_local_one(text_file, tmp_path):
  # Two smoke trials and one with a bad value, which must fail without stopping the others.
  config = write_sweep_config(tmp_path, text_file, "sweep.axis('model.dropout', [0.0, 1.5, 0.2])")
  sweep_dir = tmp_path / 'sweep'
  with _own_ray_dir(sweep_dir) as env, _ray_head(env, num_cpus=2) as address:
    result = _sweep(config, sweep_dir, env, '--address', address)
    assert result.returncode == 1, result.stderr[-3000:]
    assert '2 CPUs, 0 GPUs; each task asks for 1 CPU' in result.stdout  # the test's head node
    status = json.loads((sweep_dir / 'sweep.json').read_text())['trials']
    assert [s['status'] for s in status.values()] == ['done', 'failed', 'done']
    # The same record as the local executor's: exit status and the trial's own error line.
    assert status['dropout=1.5']['exit_status'] == 2
    assert status['dropout=1.5']['error'] == 'error: model.dropout must be in [0, 1), got 1.5'
    assert all(s['slot'].startswith('ray:') for s in status.values())
    assert not (sweep_dir / 'dropout=1.5').exists()
    for name in ('dropout=0', 'dropout=0.2'):
      results = json.loads((sweep_dir / name / 'results.json').read_text())
      assert results['steps'] == 12 and results['val_loss'] < 4.0
    assert result.stderr.strip().splitlines()[-1].startswith('error: 1 of 3 trials failed')

  # Resume, on a local Ray instance that the sweep starts itself: the finished trial is
  # skipped, the unfinished one resumes from its checkpoint, the bad one fails again.
  (sweep_dir / 'dropout=0.2' / 'results.json').unlink()
  finished = (sweep_dir / 'dropout=0' / 'results.json').stat().st_mtime_ns
  with _own_ray_dir(sweep_dir) as env:
    again = _sweep(config, sweep_dir, env, '--parallel', '2')
  assert again.returncode == 1, again.stderr[-3000:]
  assert '1 already done, 2 to run as Ray tasks' in again.stdout
  assert (sweep_dir / 'dropout=0' / 'results.json').stat().st_mtime_ns == finished
  assert 'resuming at step 12' in (sweep_dir / 'logs' / 'dropout=0.2.log').read_text()
  status = json.loads((sweep_dir / 'sweep.json').read_text())['trials']
  assert [s['status'] for s in status.values()] == ['done', 'failed', 'done']


def test_sigterm_to_a_ray_sweep_checkpoints_its_trials(text_file, tmp_path):
  config = write_sweep_config(tmp_path, text_file, "sweep.axis('seed', [0, 1, 2])")
  sweep_dir = tmp_path / 'sweep'
  with _own_ray_dir(sweep_dir) as env:
    process = start_command('--config', config, '--sweep', '--workdir', sweep_dir, '--executor',
                            'ray', '--parallel', '2', *LONG_RUN, env=env)
    try:
      wait_for_log_line(sweep_dir / 'logs', 'step 20/3000')
      process.send_signal(signal.SIGTERM)
      _, stderr = process.communicate(timeout=240)
    finally:
      process.kill()
      process.wait()
  assert process.returncode == 143, stderr[-2000:]
  status = json.loads((sweep_dir / 'sweep.json').read_text())['trials']
  assert {s['status'] for s in status.values()} == {'interrupted'}
  # Two trials were running (2 CPUs): they checkpointed. The third never started.
  stopped_at = [checkpoint.latest_step_on_disk(sweep_dir / n) for n in status]
  assert sum(0 < (s or 0) < 3000 for s in stopped_at) >= 1, stopped_at
  assert not (sweep_dir / '.stop').exists()
