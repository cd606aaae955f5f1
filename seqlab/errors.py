"""The exceptions that seqlab shows to users as a one-line `error:` and a distinct exit status."""


class SeqlabError(ValueError):
  """A problem with the user's input (config, data, run directory).

  Commands print it as `error: <message>` and exit with `exit_status`, so the
  message must say what is wrong and how to fix it, in one line.
  """
  exit_status = 2


class NonFiniteLossError(SeqlabError):
  """The loss, gradient norm or parameters became NaN/Inf; the run stopped."""
  exit_status = 3


class RunWriteError(SeqlabError):
  """Writing into the run directory failed (no space, permission, quota); the run stopped.

  Exit status 74 (EX_IOERR): the last complete checkpoint is kept, and re-running
  the same command resumes from it once the cause is fixed.
  """
  exit_status = 74
