"""One process per run directory: an exclusive `flock` on `RUN_DIR/.lock`.

The operating system releases the lock when its process ends, however it
ends (kill -9 included), so a dead run never blocks the next one. The file
names the holder for the error message. `flock` is not reliable on some
network file systems (NFS without lock support); there it does not protect.
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
