"""Stopping cleanly on SIGTERM (preemption), SIGINT (Ctrl-C) and SIGHUP (a closed terminal).

Inside `catch_stop_signals()`, the first SIGTERM, SIGINT or SIGHUP only records
itself; the training loop sees it after the current step, writes a checkpoint,
flushes TensorBoard and raises `Interrupted`, which `launch.py` turns into exit
status 128 + signal number (143 SIGTERM, 130 SIGINT, 129 SIGHUP), as shells
report a process killed by that signal. A second SIGTERM or SIGINT acts as it
would without seqlab (at once). Repeats that nobody typed are ignored: a closed
terminal sends SIGHUP more than once (the shell passes it on to its jobs, and
the kernel sends it again when the shell exits), and a sweep's trial gets
SIGTERM when its sweep dies (below) even if the sweep had already passed it a
signal. On SIGHUP, stdout and stderr that were a terminal which has hung up go
to /dev/null: a hung-up terminal fails every write (EIO), which would end the
run before its checkpoint; if the terminal is still there (`kill -HUP`), they
stay. Under `nohup` (SIGHUP ignored), SIGHUP stays ignored.

`end_with_parent()` (the first thing a sweep's trial does) makes this process
get SIGTERM when the sweep's process ends, however it ends (kill -9
included): Linux's PR_SET_PDEATHSIG, elsewhere a thread that watches
`os.getppid()`. So a trial never outlives its sweep: it checkpoints and stops.
"""

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# The pid of the process whose end this one ends with (set by the sweep for its trials).
PARENT_PID_ENV = 'SEQLAB_PARENT_PID'
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_watched_parent: int | None = None  # set by end_with_parent


class Interrupted(Exception):
  """Training stopped on a signal after saving a checkpoint."""

  def __init__(self, signum: int, step: int):
    self.signum, self.step = signum, step
    super().__init__(f'{signal.Signals(signum).name} received: stopped after step {step} with a '
                     'checkpoint; re-run the same command to continue')

  @property
  def exit_status(self) -> int:
    return 128 + self.signum


class StopRequest:
  """Set by the signal handler; read by the training loop once per step (no device sync)."""

  def __init__(self):
    self.signum: int | None = None


def parent_is_gone() -> bool:
  """True once the process `end_with_parent` watches has ended (never if it watches none)."""
  return _watched_parent is not None and os.getppid() != _watched_parent


def _parent_is_ending(signum: int, wait_seconds: float = 1.0) -> bool:
  """Whether a SIGTERM is the watched parent's death signal. The kernel sends it when the
  parent's thread that started us exits, which can be before the rest of its process has
  (a SIGKILLed sweep): getppid() changes only then, so wait for it a moment."""
  if _watched_parent is None or signum != signal.SIGTERM:
    return parent_is_gone()
  deadline = time.monotonic() + wait_seconds
  while not parent_is_gone() and time.monotonic() < deadline:
    time.sleep(0.01)
  return parent_is_gone()


def end_with_parent() -> None:
  """Gets SIGTERM when the process named by $SEQLAB_PARENT_PID ends (no-op without it).

  Called first thing in a sweep's trial (`seqlab.sweeps.trial`); the variable is
  removed so that this process's own children do not inherit it. If the parent
  ended before this was set up, exits 143 at once: nothing has been done yet.
  """
  global _watched_parent  # pylint: disable=global-statement
  value = os.environ.pop(PARENT_PID_ENV, None)
  if not value:
    return
  _watched_parent = int(value)
  if not _parent_death_signal(signal.SIGTERM):
    threading.Thread(target=_watch_parent, name='seqlab-watch-parent', daemon=True).start()
  if parent_is_gone():  # it ended before prctl: no signal will come
    print(f'seqlab: its parent process (pid {value}) has ended; stopping before '
          'starting (re-run the sweep to continue)', file=sys.stderr, flush=True)
    sys.exit(128 + signal.SIGTERM)


def _parent_death_signal(signum: int) -> bool:
  """Linux: the kernel sends `signum` when the parent ends. False where that is unavailable.

  (The kernel's parent is the thread that started this process: a sweep starts its
  trials from its main thread, which lives as long as the sweep's process.)
  """
  if not sys.platform.startswith('linux'):
    return False
  try:
    prctl = ctypes.CDLL(None, use_errno=True).prctl
  except (OSError, AttributeError):
    return False
  prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
  return prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0


def _watch_parent(interval: float = 0.5) -> None:
  while not parent_is_gone():
    time.sleep(interval)
  os.kill(os.getpid(), signal.SIGTERM)


def _leave_terminal(fds) -> None:
  """Points `fds` at /dev/null."""
  if not fds:
    return
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    for fd in fds:
      os.dup2(devnull, fd)
  finally:
    os.close(devnull)


def _act_as_without_us(signum: int, old, frame) -> None:
  """What `signum` would have done had seqlab not caught it: `old`, the handler before ours."""
  if callable(old):
    old(signum, frame)  # Python's SIGINT handler: KeyboardInterrupt
  elif old != signal.SIG_IGN:  # SIG_DFL (or None: not set from Python): the default action
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


@contextlib.contextmanager
def catch_stop_signals(
    what_happens: str = 'finishing the current step and saving a checkpoint'):
  request = StopRequest()
  previous = {}
  on_terminal = [fd for fd in (1, 2) if _isatty(fd)]

  def handler(signum, frame):
    if signum == signal.SIGHUP:  # a terminal that hung up is no longer a tty (its ioctls fail)
      _leave_terminal([fd for fd in on_terminal if not _isatty(fd)])
    if request.signum is not None:  # a second one
      if signum == signal.SIGHUP or parent_is_gone():
        return  # not a person asking again (see the module's docstring)
      for s, old in previous.items():
        signal.signal(s, old)
      _act_as_without_us(signum, previous[signum], frame)
      return
    request.signum = signum
    why, again = f'{signal.Signals(signum).name} received', ' (send it again to stop at once)'
    if _parent_is_ending(signum):
      why, again = f'its parent process (pid {_watched_parent}) has ended', ''
    elif signum == signal.SIGHUP:
      again = ''
    try:
      print(f'\n{why}: {what_happens}{again}', file=sys.stderr, flush=True)
    except OSError:  # a terminal gone for another reason: say nothing, stop all the same
      pass

  if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
    for signum in STOP_SIGNALS:
      if signum == signal.SIGHUP and signal.getsignal(signum) == signal.SIG_IGN:
        continue  # `nohup`: the user asked to outlive the terminal
      previous[signum] = signal.signal(signum, handler)
  try:
    yield request
  finally:
    for signum, old in previous.items():
      signal.signal(signum, old)


def _isatty(fd: int) -> bool:
  try:
    return os.isatty(fd)
  except OSError:
    return False
