"""The one exception type that seqlab shows to users as a one-line error."""


class SeqlabError(ValueError):
  """A problem with the user's input (config, data, run directory).

  `launch.py` prints it as `error: <message>` and exits with status 2, so the
  message must say what is wrong and how to fix it, in one line.
  """


class NonFiniteLossError(SeqlabError):
  """The loss, gradient norm or parameters became NaN/Inf; the run stopped."""
