"""One process per run directory: an exclusive `flock` on `RUN_DIR/.lock`.

The operating system releases the lock when its process ends, however it
ends (kill -9 included), so a dead run never blocks the next one. The file
names the holder for the error message. `flock` is not reliable on some
network file systems (NFS without lock support); there it does not protect.
`holder()` asks, without waiting or creating anything, who holds it now.
"""

import contextlib
import fcntl
import os
import pathlib
import socket

from seqlab.errors import SeqlabError

LOCK_FILENAME = '.lock'


@contextlib.contextmanager
def hold(workdir: pathlib.Path):
  """Holds the run directory's lock; raises SeqlabError if another process holds it."""
  path = pathlib.Path(workdir) / LOCK_FILENAME
  file = open(path, 'a+', encoding='utf-8')  # pylint: disable=consider-using-with
  try:
    fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    file.seek(0)
    holder = file.read().strip() or 'another process'
    file.close()
    raise SeqlabError(f'{workdir} is in use by {holder}; wait for it to finish, stop it, or use '
                      'another --workdir') from None
  try:
    file.seek(0)
    file.truncate()
    file.write(f'seqlab pid {os.getpid()} on {socket.gethostname()}')
    file.flush()
    yield
  finally:
    file.truncate(0)
    fcntl.flock(file, fcntl.LOCK_UN)
    file.close()


def holder(workdir: pathlib.Path) -> str | None:
  """Who holds the run directory's lock ('seqlab pid N on HOST'), or None if nobody does.

  Takes the lock for an instant to find out, so a process that tries to take it
  at that very instant is refused: ask before starting that process, not while.
  """
  path = pathlib.Path(workdir) / LOCK_FILENAME
  try:
    file = open(path, 'r', encoding='utf-8')  # pylint: disable=consider-using-with
  except OSError:  # no lock file (never a run), or not readable: nothing to wait for
    return None
  with file:
    try:
      fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      return file.read().strip() or 'another process'
    except OSError:  # cannot tell (a file system without flock on read-only files)
      return None
    fcntl.flock(file, fcntl.LOCK_UN)
    return None
