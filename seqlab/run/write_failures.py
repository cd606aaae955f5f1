"""Recognising a refused write (no space, permission, quota), and keeping orbax quiet about it.

When a file system refuses a checkpoint write, orbax's background threads log
the tensorstore error with its traceback from every thread involved, and
tensorstore's callbacks print `RuntimeError: Event loop is closed` as the save's
event loop goes away: about 1,300 lines for one full disk. seqlab reports the
failure itself as one `error:` line (`seqlab.errors.RunWriteError`), so
`quiet_background_failures()` drops those records and background tracebacks; the main
thread's errors are never dropped.
"""

import errno
import logging
import os
import pathlib
import re
import sys
import threading

from seqlab.errors import RunWriteError
from seqlab.run import directory as rundir

# errno values that mean "this file system refuses the write" (not a bug of seqlab's).
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS,
                          errno.EFBIG, errno.EIO})
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")
_UNFINISHED_CHECKPOINT = re.compile(r'(/\S*/checkpoints/\w+/\d+)\.orbax-checkpoint-tmp')


def cause(error: BaseException | None) -> str | None:
  """The cause ('No space left on device', ...) if `error` is a refused write, else None.

  Orbax and tensorstore report a failed write as a ValueError whose message
  carries the OS error code; Python's own writes raise OSError.
  """
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
      return os.strerror(error.errno)
    match = _OS_ERROR_CODE.search(str(error))
    if match and int(match[1]) in WRITE_ERRNOS:
      return os.strerror(int(match[1]))
    error = error.__cause__ or error.__context__
  return None


def failed_checkpoint(error: BaseException) -> str | None:
  """The checkpoint folder (`.../checkpoints/latest/10`) a failed orbax write was for, if named."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if match := _UNFINISHED_CHECKPOINT.search(str(error)):
      return match[1]
    error = error.__cause__ or error.__context__
  return None


def stopped(what: str, reason: str, workdir: pathlib.Path) -> RunWriteError:
  """The one-line error of a run stopped by a refused write: what, why, and where a re-run
  resumes from."""
  step = rundir.latest_step_on_disk(workdir)
  resume = f'it resumes from step {step}' if step is not None else 'it starts from step 0'
  return RunWriteError(
      f'cannot write {what}: {reason}; the run stopped. Free space (or fix the permissions) '
      f'under {workdir} and re-run the same command: {resume}')


def from_os_error(error: OSError, workdir: pathlib.Path) -> RunWriteError | None:
  """`stopped(...)` for an OSError of Python's own writes (samples.md, results.json, ...), or
  None if it is not a refused write."""
  reason = cause(error)
  what = error.filename or f'a file under {workdir} (or the console)'  # f.write: no name
  return stopped(str(what), reason, workdir) if reason else None


def thread_failure() -> BaseException | None:
  """The refused write that ended a background writer thread (e.g. TensorBoard's), if any."""
  return _thread_failures[-1] if _thread_failures else None


_thread_failures = []


class _Quiet(logging.Filter):
  """Drops log records about a refused write; remembers that one happened."""
  seen_failure = False

  def filter(self, record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    if cause(error) or cause(ValueError(record.getMessage())):
      _Quiet.seen_failure = True
      return False
    if _Quiet.seen_failure and 'failed' in record.getMessage().lower():
      return False  # "Save Finalize thread failed": the same failure, reported again
    return True


_installed = False


def _is_noise(error: BaseException) -> bool:
  if type(error).__module__.startswith('seqlab'):
    return False  # seqlab's own errors (RunWriteError) are reported, never dropped
  return bool(cause(error))


def _is_closed_loop(error: BaseException) -> bool:
  """A tensorstore callback into the event loop of a save that has already ended: it can
  only happen after that save failed, and there is nothing left to deliver to."""
  return isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'


def quiet_background_failures() -> None:
  """Installs the filter on absl's logger and the exception hooks (once per process)."""
  global _installed
  if _installed:
    return
  _installed = True
  quiet = _Quiet()
  for name in ('absl', 'asyncio'):  # orbax logs through absl; "Task exception was never retrieved"
    logging.getLogger(name).addFilter(quiet)
  thread_hook, unraisable_hook = threading.excepthook, sys.unraisablehook

  def quiet_thread_hook(args):
    if _is_noise(args.exc_value):
      _thread_failures.append(args.exc_value)
    else:
      thread_hook(args)

  def quiet_unraisable_hook(args):  # tensorstore's callbacks into a closed event loop
    if not (_is_noise(args.exc_value) or _is_closed_loop(args.exc_value)):
      unraisable_hook(args)

  # The main thread's own errors are never dropped: seqlab turns a refused write there into
  # RunWriteError, and anything else must be seen.
  threading.excepthook, sys.unraisablehook = quiet_thread_hook, quiet_unraisable_hook
