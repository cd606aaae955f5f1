"""Stopping cleanly on SIGTERM (preemption) and SIGINT (Ctrl-C).

Inside `catch_stop_signals()`, the first SIGTERM or SIGINT only records itself;
the training loop sees it after the current step, writes a checkpoint, flushes
TensorBoard and raises `Interrupted`, which `launch.py` turns into exit status
128 + signal number (143 for SIGTERM, 130 for SIGINT), as shells report a
process killed by that signal. A second signal acts as it would without seqlab.
"""

import contextlib
import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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


@contextlib.contextmanager
def catch_stop_signals(
    what_happens: str = 'finishing the current step and saving a checkpoint'):
  request = StopRequest()
  previous = {}

  def handler(signum, frame):
    del frame
    request.signum = signum
    signal.signal(signum, previous[signum])  # a second one acts at once
    print(f'\n{signal.Signals(signum).name} received: {what_happens} (send it again to stop at '
          'once)', file=sys.stderr, flush=True)

  if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
    for signum in STOP_SIGNALS:
      previous[signum] = signal.signal(signum, handler)
  try:
    yield request
  finally:
    for signum, old in previous.items():
      signal.signal(signum, old)
