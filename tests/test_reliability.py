"""Interruptions: SIGTERM/SIGINT stop with a checkpoint and resume exactly; one process per run."""

import json
import signal
import subprocess

import pytest

from conftest import run_command, start_command
from configs import shakespeare
from seqlab.run import lock as run_lock
from seqlab import train
from seqlab.errors import SeqlabError

# The smoke model on the small test corpus, long enough to be interrupted mid-run; on one
# device, as the uninterrupted run it is compared with (in this process) is.
OVERRIDES = {'train.num_steps': 1500, 'eval.every_steps': 500, 'log.every_steps': 10,
             'log.checkpoint_every_steps': 500, 'log.sample_every_steps': 100_000,
             'data.test_fraction': 0.0, 'parallel.cpu_devices': 1}


def _config(text_file):
  config = shakespeare.get_config('smoke')
  config.data.path = str(text_file)
  for key, value in OVERRIDES.items():
    group, field = key.split('.')
    config[group][field] = value
  return config


def _launch_args(text_file, workdir):
  """launch.py's arguments for the run of `_config(text_file)` in `workdir`."""
  return ['--config', 'configs/shakespeare.py:smoke', f'--config.data.path={text_file}',
          f'--workdir={workdir}', *(f'--config.{k}={v}' for k, v in OVERRIDES.items())]


@pytest.mark.slow
@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT], ids=['SIGTERM', 'SIGINT'])
def test_signal_stops_with_checkpoint_and_rerun_matches_uninterrupted(text_file, tmp_path, signum):
  workdir = tmp_path / 'run'
  proc = start_command(*_launch_args(text_file, workdir))
  for line in proc.stdout:  # interrupt mid-run, between checkpoints
    if line.startswith('step 120/'):
      proc.send_signal(signum)
      break
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 128 + signum, err
  stopped = [l for l in err.splitlines() if 'stopped after step' in l]
  assert stopped and signal.Signals(signum).name in stopped[0], err
  step = int(stopped[0].split('stopped after step ')[1].split()[0])
  assert 120 <= step < 1500  # it finished the step it was in, not the run
  assert (workdir / 'checkpoints' / 'latest' / str(step)).is_dir()

  resumed = run_command(*_launch_args(text_file, workdir))
  assert resumed.returncode == 0, resumed.stderr
  assert f'resuming at step {step}' in resumed.stdout
  whole = train.train_and_evaluate(_config(text_file), tmp_path / 'whole')
  results = json.loads((workdir / 'results.json').read_text())
  for key in ('val_loss', 'best_val_loss', 'best_step', 'steps'):
    assert results[key] == whole[key], key


def test_a_second_process_on_the_same_run_directory_refuses(text_file, tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  with run_lock.hold(workdir):
    with pytest.raises(SeqlabError, match=r'is in use by seqlab pid \d+ on .*; wait for it'):
      train.train_and_evaluate(_config(text_file), workdir)
  assert sorted(p.name for p in workdir.iterdir()) == ['.lock']  # nothing else written


@pytest.mark.slow
def test_a_killed_process_does_not_hold_the_lock(tmp_path):
  code = ('import os, signal, sys; from seqlab.run import lock\n'
          'with lock.hold(sys.argv[1]): os.kill(os.getpid(), signal.SIGKILL)')
  result = run_command(tmp_path, code=code, timeout=120)
  assert result.returncode == -signal.SIGKILL, result.stderr
  assert 'seqlab pid' in (tmp_path / '.lock').read_text()  # the dead holder's name is still there
  with run_lock.hold(tmp_path):  # ... but the lock is free
    pass


@pytest.mark.slow
@pytest.mark.parametrize(
    'trigger', ['step 120/', 'step 500/1500 | val loss', 'step 1000/1500 | loss'],
    ids=['mid-training', 'while-checkpointing', 'at-checkpoint-step'])
def test_kill_9_loses_at_most_the_work_since_the_last_checkpoint(text_file, tmp_path, trigger):
  """kill -9 at several moments; re-running ends exactly like a run that was never killed."""
  workdir = tmp_path / 'run'
  proc = start_command(*_launch_args(text_file, workdir), stderr=subprocess.DEVNULL)
  for line in proc.stdout:
    if line.startswith(trigger):
      proc.kill()  # SIGKILL: no handler runs
      break
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  resumed = run_command(*_launch_args(text_file, workdir))
  assert resumed.returncode == 0, resumed.stderr
  whole = train.train_and_evaluate(_config(text_file), tmp_path / 'whole')
  results = json.loads((workdir / 'results.json').read_text())
  for key in ('val_loss', 'best_val_loss', 'best_step', 'steps'):
    assert results[key] == whole[key], key
