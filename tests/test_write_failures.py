"""A refused write (full disk, permission, quota) ends a run with one error line, exit 74, and
no unfinished checkpoint; a re-run after the cause is fixed ends like an uninterrupted run."""

import errno
import json
import os
import shutil
import subprocess

import pytest
import tensorboardX.event_file_writer

from conftest import run_command, tiny_config
from seqlab import train
from seqlab.errors import RunWriteError
from seqlab.run import checkpoint
from seqlab.run import write_failures

# Long enough for several checkpoints and event flushes; short enough for the fast loop.
OVERRIDES = {'train.num_steps': 24, 'log.checkpoint_every_steps': 6, 'eval.every_steps': 6,
             'log.every_steps': 2, 'log.sample_every_steps': 12, 'log.novelty_num_samples': 0}


def _unfinished(workdir):
  return sorted(str(p) for p in (workdir / 'checkpoints').glob('*/*') if not p.name.isdigit())


def test_refused_write_causes_are_recognised():
  assert write_failures.cause(OSError(errno.ENOSPC, 'x')) == os.strerror(errno.ENOSPC)
  assert write_failures.cause(PermissionError(errno.EACCES, 'x')) == os.strerror(errno.EACCES)
  tensorstore = ValueError('RESOURCE_EXHAUSTED: Error writing "step/0" in OCDBT database at local '
                           'file "/r/checkpoints/best/20.orbax-checkpoint-tmp/state/": Failed to '
                           "write 9 bytes: No space left on device [os_error_code='28']")
  assert write_failures.cause(tensorstore) == os.strerror(errno.ENOSPC)
  assert write_failures.failed_checkpoint(tensorstore) == '/r/checkpoints/best/20'
  try:  # found through the chain of a wrapping exception
    try:
      raise tensorstore
    except ValueError as inner:
      raise RuntimeError('commit failed') from inner
  except RuntimeError as outer:
    assert write_failures.cause(outer) == os.strerror(errno.ENOSPC)
  assert write_failures.cause(ValueError('shape mismatch')) is None
  assert write_failures.cause(OSError(errno.ENOENT, 'x')) is None  # a missing file is not a full disk


@pytest.mark.slow
def test_full_disk_at_a_checkpoint_stops_cleanly_and_rerun_matches(text_file, tmp_path,
                                                                    monkeypatch):
  config = lambda: tiny_config(text_file, **OVERRIDES)
  whole = train.train_and_evaluate(config(), tmp_path / 'whole')

  real_usage, saves = shutil.disk_usage, []

  def filling_disk(path):  # the third save finds the disk full
    saves.append(path)
    usage = real_usage(path)
    return usage._replace(free=0) if len(saves) >= 3 else usage
  monkeypatch.setattr(checkpoint.shutil, 'disk_usage', filling_disk)
  workdir = tmp_path / 'run'
  with pytest.raises(RunWriteError) as stopped:
    train.train_and_evaluate(config(), workdir)
  message = str(stopped.value)
  assert message.startswith(f'cannot write checkpoint {workdir.absolute()}/checkpoints/')
  assert 'No space left on device' in message and 'resumes from step 6' in message
  assert stopped.value.exit_status == 74
  assert checkpoint.steps_on_disk(workdir) == [6] and not _unfinished(workdir)

  monkeypatch.setattr(checkpoint.shutil, 'disk_usage', real_usage)  # space freed
  resumed = train.train_and_evaluate(config(), workdir)
  for key in ('val_loss', 'best_val_loss', 'best_step', 'steps'):
    assert resumed[key] == whole[key], key


@pytest.mark.slow
def test_failed_event_write_stops_cleanly_and_rerun_matches(text_file, tmp_path, monkeypatch):
  """tensorboardX writes events in a thread: its failure must stop the run, not hang it."""
  config = lambda: tiny_config(text_file, **OVERRIDES)
  whole = train.train_and_evaluate(config(), tmp_path / 'whole')

  real_write, writes = tensorboardX.event_file_writer.EventsWriter._write_serialized_event, []

  def failing_write(self, event):
    writes.append(event)
    if len(writes) > 20:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_write(self, event)
  monkeypatch.setattr(tensorboardX.event_file_writer.EventsWriter, '_write_serialized_event',
                      failing_write)
  workdir = tmp_path / 'run'
  with pytest.raises(RunWriteError) as stopped:
    train.train_and_evaluate(config(), workdir)
  assert str(stopped.value).startswith(f'cannot write TensorBoard events in {workdir}: No space')
  assert not _unfinished(workdir)

  monkeypatch.setattr(tensorboardX.event_file_writer.EventsWriter, '_write_serialized_event',
                      real_write)
  resumed = train.train_and_evaluate(config(), workdir)
  for key in ('val_loss', 'best_val_loss', 'best_step', 'steps'):
    assert resumed[key] == whole[key], key


def _mount_tmpfs(path, size: str) -> bool:
  path.mkdir()
  return subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
                        capture_output=True, check=False).returncode == 0


@pytest.mark.slow
def test_a_file_system_that_fills_up(tmp_path):
  """A real full file system (a small tmpfs; needs root): launch.py prints one error line,
  exits 74, leaves no unfinished checkpoint, and resumes once there is space."""
  disk = tmp_path / 'disk'
  if not _mount_tmpfs(disk, '3M'):
    pytest.skip('mounting a tmpfs needs root (CAP_SYS_ADMIN)')
  try:
    args = ['--config', 'configs/shakespeare.py:smoke', '--config.model.hidden_size=128',
            '--config.train.num_steps=60', '--config.log.checkpoint_every_steps=10',
            '--config.log.novelty_num_samples=0', '--config.parallel.cpu_devices=1',
            f'--workdir={disk}/run']
    full = run_command(*args, timeout=600)
    lines = full.stderr.strip().splitlines()
    assert full.returncode == 74 and len(lines) == 1, full.stderr[-3000:]
    assert lines[0].startswith(f'error: cannot write checkpoint {disk}/run/checkpoints/')
    assert 'No space left on device' in lines[0]
    kept = checkpoint.latest_step_on_disk(disk / 'run')
    assert f'resumes from step {kept}' in lines[0] and not _unfinished(disk / 'run')

    subprocess.run(['mount', '-o', 'remount,size=64M', str(disk)], check=True)
    resumed = run_command(*args, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f'resuming at step {kept}' in resumed.stdout
    whole = run_command(*args[:-1], f'--workdir={tmp_path}/whole', timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in (disk / 'run' / 'results.json',
                                                    tmp_path / 'whole' / 'results.json')]
    for key in ('val_loss', 'best_val_loss', 'best_step', 'steps'):
      assert results[0][key] == results[1][key], key
  finally:
    subprocess.run(['umount', '-l', str(disk)], check=False)
