"""The study's contact with processes and the machine: launch.py started with its output
logged (stopped cleanly by a signal), and whether the cores are quiet before a measurement."""

import os
import pathlib
import signal
import subprocess
import sys
import time

from experiments.zoo.entries import ROOT

INTERRUPTED = (129, 130, 143)  # launch.py's exit statuses after SIGHUP, SIGINT, SIGTERM


def run_logged(command: list[str], log: pathlib.Path) -> int:
  """Runs `command` in the repository root, its output to the console and appended to `log`;
  returns its exit status. A Ctrl-C reaches it too (its process group), and a SIGTERM to
  this process is passed on: it checkpoints and exits 130 / 143. A child killed by one of
  those signals (before launch.py handles them) counts as interrupted too, and so does any
  end after this process got a SIGTERM: the caller stops rather than start the next run."""
  log.parent.mkdir(parents=True, exist_ok=True)
  with open(log, 'a', encoding='utf-8') as f:
    f.write(f'\n$ {" ".join(command)}\n')
    f.flush()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1)
    terminated = []

    def pass_on(*_):
      terminated.append(True)
      process.send_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, pass_on)
    try:
      for line in process.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        f.write(line)
      status = process.wait()
    except KeyboardInterrupt:
      status = process.wait()
    finally:
      signal.signal(signal.SIGTERM, previous)
  if status < 0 and 128 - status in INTERRUPTED:
    status = 128 - status  # killed by SIGHUP, SIGINT or SIGTERM: as launch.py would exit
  if terminated and status not in INTERRUPTED:
    status = 128 + signal.SIGTERM
  return status


def busy_cores(seconds: float = 2.0) -> float | None:
  """How many cores' worth of CPU time the machine spent over `seconds` (from /proc/stat;
  None where there is none). Unlike the load average, it does not remember the previous
  measurement's own run."""
  def sample():
    with open('/proc/stat', encoding='ascii') as f:
      fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields), fields[3] + fields[4]  # total, idle + iowait (in clock ticks)
  try:
    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
  except (OSError, ValueError, IndexError):
    return None
  if total1 == total0:
    return None
  return (1 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


def quiet_note(busy: float | None) -> str | None:
  if busy is not None and busy > 0.25:
    return (f'note: {busy:.2f} cores busy before this measurement: the machine is not quiet, '
            'and this speed is not the model\'s (measure again when it is)')
  return None


def each(named_items, step, unfinished: str = 'not finished') -> int:
  """Calls `step(item)` for each (name, item) in turn: stops at the first that was interrupted
  (returning its status: the command resumes when run again), carries on past one that failed
  (nonzero), and returns 1 where any failed, after naming them."""
  failed = []
  for name, item in named_items:
    status = step(item)
    if status in INTERRUPTED:
      return status
    if status:
      failed.append(name)
  if failed:
    print(f'{unfinished}: {", ".join(failed)}')
  return 1 if failed else 0
