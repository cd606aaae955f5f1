"""A sweep's trials never outlive it, and a closed terminal (SIGHUP) stops runs and sweeps
with a checkpoint (docs/reliability.md).

The subprocess tests start every process they signal or kill (a sweep's trials are
its children) and kill what is left of them in a `finally`. A "terminal" is a
pseudo-terminal whose session leader is the process under test; closing its master
side hangs it up as closing a terminal window does: the kernel sends SIGHUP, and
every later write to it fails (EIO).
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import LONG_RUN, ROOT, command, command_env, run_command, write_sweep_config
from seqlab import interrupts
from seqlab import train
from seqlab.run import checkpoint
from seqlab.run import lock as run_lock
from test_reliability import _config, _launch_args  # the run its SIGTERM test stops

linux_only = pytest.mark.skipif(not sys.platform.startswith('linux'),
                                reason='reads /proc; pseudo-terminals as Linux has them')
NAMES = ['seed=0', 'seed=1']  # the trials of "sweep.axis('seed', [0, 1])"
# Makes stdout (a pseudo-terminal) the controlling terminal of the new session, then
# becomes `python ARGS` (same pid: the session leader, which gets the hang-up's SIGHUP).
_ON_TERMINAL = ('import fcntl, os, sys, termios; fcntl.ioctl(1, termios.TIOCSCTTY, 0); '
                'os.execv(sys.executable, [sys.executable, *sys.argv[1:]])')


def _start_on_terminal(args: list[str]) -> tuple[subprocess.Popen, int]:
  """`python ARGS` with stdin and stdout on a new pseudo-terminal (stderr a pipe, to be
  read after the hang-up); returns the process and the terminal's master side."""
  master, slave = os.openpty()
  process = subprocess.Popen(  # pylint: disable=consider-using-with
      [sys.executable, '-c', _ON_TERMINAL, *command(*args)[1:]], cwd=ROOT, env=command_env(),
      stdin=slave, stdout=slave, stderr=subprocess.PIPE, text=True, start_new_session=True,
      # As from a terminal, SIGHUP at its default, even if this test runs under nohup.
      preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
  os.close(slave)
  return process, master


def _read_until(master: int, text: str, timeout: float = 240) -> str:
  """What the terminal shows until `text` appears."""
  seen, deadline = '', time.time() + timeout
  while text not in seen and time.time() < deadline:
    seen += os.read(master, 4096).decode(errors='replace')
  assert text in seen, seen[-2000:]
  return seen


def _hang_up(process: subprocess.Popen, master: int) -> None:
  """Closes the terminal, then sends the second SIGHUP a shell sends its jobs on exit."""
  os.close(master)
  time.sleep(0.2)
  process.send_signal(signal.SIGHUP)


def _sweep_args(config, sweep_dir) -> list[str]:
  return ['--config', str(config), '--sweep', '--workdir', str(sweep_dir), '--parallel', '2',
          *LONG_RUN]


def _wait_until_training(sweep_dir: pathlib.Path, timeout: float = 240) -> dict[str, int]:
  """Waits until every trial has logged step 20; returns {trial: its process's pid}."""
  deadline = time.time() + timeout
  logs = [sweep_dir / 'logs' / f'{name}.log' for name in NAMES]
  while not all(p.exists() and 'step 20/3000' in p.read_text() for p in logs):
    assert time.time() < deadline, 'the trials did not start training'
    time.sleep(0.2)
  status = json.loads((sweep_dir / 'sweep.json').read_text())['trials']
  return {name: status[name]['pid'] for name in NAMES}


def _alive(pid: int, sweep_dir: pathlib.Path) -> bool:
  """Whether `pid` is still a trial process of `sweep_dir` (not ended, not a zombie, not a
  reused pid)."""
  proc = pathlib.Path(f'/proc/{pid}')
  try:
    cmdline = (proc / 'cmdline').read_bytes().decode(errors='replace')
    state = (proc / 'stat').read_text().rsplit(')', 1)[1].split()[0]
  except OSError:
    return False
  return state != 'Z' and str(sweep_dir) in cmdline


def _kill_what_is_left(process: subprocess.Popen, pids, sweep_dir: pathlib.Path) -> None:
  if process.poll() is None:
    process.kill()
    process.wait()
  for pid in pids:
    if _alive(pid, sweep_dir):
      os.kill(pid, signal.SIGKILL)


def _stopped_at(log: str, signame: str) -> int:
  """The step in a trial's `seqlab: SIGNAME received: stopped after step N ...` line."""
  lines = [l for l in log.splitlines() if f'{signame} received: stopped after step' in l]
  assert lines, log[-2000:]
  return int(lines[-1].split('stopped after step ')[1].split()[0])


def _check_rerun_resumes(args, sweep_dir: pathlib.Path, stopped_at: dict) -> None:
  again = run_command(*args, timeout=600)
  assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
  assert 'FAILED' not in again.stdout and 'waiting for' not in again.stdout
  status = json.loads((sweep_dir / 'sweep.json').read_text())['trials']
  assert {s['status'] for s in status.values()} == {'done'}
  for name, step in stopped_at.items():
    assert json.loads((sweep_dir / name / 'results.json').read_text())['steps'] == 3000
    assert f'resuming at step {step}' in (sweep_dir / 'logs' / f'{name}.log').read_text()


@pytest.mark.slow
@linux_only
def test_kill_9_of_a_sweep_stops_its_trials_with_a_checkpoint_and_the_rerun_resumes(
    text_file, tmp_path):
  config = write_sweep_config(tmp_path, text_file, "sweep.axis('seed', [0, 1])")
  sweep_dir = tmp_path / 'sweep'
  args = _sweep_args(config, sweep_dir)
  with open(tmp_path / 'sweep.out', 'w', encoding='utf-8') as out:  # kept for a failure's reader
    # pylint: disable-next=consider-using-with
    process = subprocess.Popen(command(*args), cwd=ROOT, env=command_env(), stdout=out,
                               stderr=subprocess.STDOUT)
  pids = {}
  try:
    pids = _wait_until_training(sweep_dir)
    process.kill()  # SIGKILL: the sweep passes nothing on
    process.wait()
    killed = time.time()
    while any(_alive(pid, sweep_dir) for pid in pids.values()) and time.time() < killed + 15:
      time.sleep(0.1)
    assert not any(_alive(pid, sweep_dir) for pid in pids.values()), 'orphaned trials'
    print(f'trials ended {time.time() - killed:.1f} s after the sweep was killed')
    stopped_at = {}
    for name in NAMES:
      log = (sweep_dir / 'logs' / f'{name}.log').read_text()
      assert f'its parent process (pid {process.pid}) has ended' in log, log[-2000:]
      stopped_at[name] = _stopped_at(log, 'SIGTERM')  # the trial's exit status was 143
      # It stopped mid-run (its steps take about a millisecond, so how far it got after
      # step 20 depends on the machine) with a checkpoint of the step it stopped after.
      assert 20 <= stopped_at[name] < 3000
      assert checkpoint.latest_step_on_disk(sweep_dir / name) == stopped_at[name]
    _check_rerun_resumes(args, sweep_dir, stopped_at)
  finally:
    _kill_what_is_left(process, pids.values(), sweep_dir)


@pytest.mark.slow
@linux_only
def test_a_closed_terminal_stops_a_run_with_a_checkpoint_and_it_resumes_exactly(
    text_file, tmp_path):
  workdir = tmp_path / 'run'
  process, master = _start_on_terminal(_launch_args(text_file, workdir))
  try:
    _read_until(master, 'step 120/')
    _hang_up(process, master)
    _, err = process.communicate(timeout=300)
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
  assert process.returncode == 128 + signal.SIGHUP, err[-3000:]
  step = _stopped_at(err, 'SIGHUP')
  assert 120 <= step < 1500  # it finished the step it was in, not the run
  assert checkpoint.latest_step_on_disk(workdir) == step

  resumed = run_command(*_launch_args(text_file, workdir))
  assert resumed.returncode == 0, resumed.stderr
  assert f'resuming at step {step}' in resumed.stdout
  whole = train.train_and_evaluate(_config(text_file), tmp_path / 'whole')
  results = json.loads((workdir / 'results.json').read_text())
  for key in ('val_loss', 'best_val_loss', 'best_step', 'steps'):
    assert results[key] == whole[key], key


@pytest.mark.slow
@linux_only
def test_a_closed_terminal_stops_a_sweep_and_its_trials_with_checkpoints(text_file, tmp_path):
  config = write_sweep_config(tmp_path, text_file, "sweep.axis('seed', [0, 1])")
  sweep_dir = tmp_path / 'sweep'
  args = _sweep_args(config, sweep_dir)
  process, master = _start_on_terminal(args)
  pids = {}
  try:
    pids = _wait_until_training(sweep_dir)
    _hang_up(process, master)
    _, err = process.communicate(timeout=240)
    assert process.returncode == 128 + signal.SIGHUP, err[-3000:]
    assert 'sweep stopped by SIGHUP' in err
    status = json.loads((sweep_dir / 'sweep.json').read_text())['trials']
    assert {(s['status'], s['exit_status']) for s in status.values()} == {('interrupted', 129)}
    stopped_at = {}
    for name in NAMES:
      log = (sweep_dir / 'logs' / f'{name}.log').read_text()
      stopped_at[name] = _stopped_at(log, 'SIGHUP')
      assert checkpoint.latest_step_on_disk(sweep_dir / name) == stopped_at[name]
    _check_rerun_resumes(args, sweep_dir, stopped_at)
  finally:
    _kill_what_is_left(process, pids.values(), sweep_dir)


@pytest.mark.slow
def test_a_trial_whose_run_directory_is_in_use_waits_for_it_instead_of_failing(
    text_file, tmp_path):
  config = write_sweep_config(tmp_path, text_file, "sweep.axis('seed', [0, 1])")
  sweep_dir = tmp_path / 'sweep'
  (sweep_dir / NAMES[0]).mkdir(parents=True)
  # Holds seed=0's run directory, as a trial of an earlier sweep process still stopping
  # would, until its stdin closes.
  holder = subprocess.Popen(  # pylint: disable=consider-using-with
      command(sweep_dir / NAMES[0], code='import sys; from seqlab.run import lock\n'
              'with lock.hold(sys.argv[1]): print("held", flush=True); sys.stdin.read()'),
      cwd=ROOT, env=command_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  sweep_process = None
  try:
    assert holder.stdout.readline() == 'held\n'
    sweep_process = subprocess.Popen(  # pylint: disable=consider-using-with
        command('--config', config, '--sweep', '--workdir', sweep_dir), cwd=ROOT,
        env=command_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in sweep_process.stdout:
      seen.append(line)
      if line.startswith(f'done  {NAMES[1]}'):  # the other trial went first
        break
    waiting = [l for l in seen if l.startswith(f'waiting for {NAMES[0]}: ')]
    assert waiting and f'in use by seqlab pid {holder.pid} on ' in waiting[0], ''.join(seen)
    status = json.loads((sweep_dir / 'sweep.json').read_text())['trials']
    assert status[NAMES[0]]['status'] == 'waiting'
    holder.stdin.close()  # the holder ends: the waiting trial starts
    holder.wait(timeout=60)
    out, err = sweep_process.communicate(timeout=300)
    assert sweep_process.returncode == 0, ''.join(seen) + out + err
    assert f'start {NAMES[0]}' in out and 'FAILED' not in out
    status = json.loads((sweep_dir / 'sweep.json').read_text())['trials']
    assert {s['status'] for s in status.values()} == {'done'}
    assert all('waiting_for' not in s for s in status.values())
  finally:
    for process in (holder, sweep_process):
      if process is not None and process.poll() is None:
        process.kill()
        process.wait()


def test_repeated_hangups_and_a_dead_parent_are_not_a_second_signal(tmp_path, monkeypatch):
  """In this process: SIGHUP twice, and SIGTERM after the watched parent has ended, leave the
  stop request as the first signal made it (no stop at once); nohup's SIGHUP stays ignored."""
  previous_hangup = signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as in a terminal, not nohup
  try:
    _repeated_hangups_and_a_dead_parent(tmp_path, monkeypatch)
  finally:
    signal.signal(signal.SIGHUP, previous_hangup)


def _repeated_hangups_and_a_dead_parent(tmp_path, monkeypatch):
  before = {s: signal.getsignal(s) for s in interrupts.STOP_SIGNALS}
  with interrupts.catch_stop_signals() as request:
    signal.raise_signal(signal.SIGHUP)
    signal.raise_signal(signal.SIGHUP)
    assert request.signum == signal.SIGHUP
    monkeypatch.setattr(interrupts, '_watched_parent', -1)  # not our parent: it has ended
    signal.raise_signal(signal.SIGTERM)
    assert request.signum == signal.SIGHUP
  assert before == {s: signal.getsignal(s) for s in interrupts.STOP_SIGNALS}  # put back
  previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
  try:
    with interrupts.catch_stop_signals() as request:
      assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
  finally:
    signal.signal(signal.SIGHUP, previous)
  with run_lock.hold(tmp_path):
    assert run_lock.holder(tmp_path) == f'seqlab pid {os.getpid()} on {socket.gethostname()}'
  assert run_lock.holder(tmp_path) is None and run_lock.holder(tmp_path / 'none') is None
