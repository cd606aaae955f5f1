"""Where metrics go: TensorBoard (tensorboardX) event files in the run directory.

Tags: train/loss, train/bpc, val/loss, val/bpc, lr, grad_norm, chars_per_sec,
text under `samples`, and the run's config as TensorBoard hparams at the end.
"""

import itertools
import os
import pathlib

import tensorboardX
from tensorboardX import summary as tbx_summary

from seqlab.run import write_failures


def flatten_config(config_dict: dict, prefix: str = '') -> dict:
  """{'model': {'cell': 'lstm'}} -> {'model.cell': 'lstm'}, keeping bool/int/float/str values."""
  flat = {}
  for key, value in config_dict.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      flat.update(flatten_config(value, name + '.'))
    elif isinstance(value, (bool, int, float, str)):
      flat[name] = value
    elif isinstance(value, (list, tuple)):
      flat[name] = str(value)
    elif value is None:
      flat[name] = 'None'
  return flat


_opened = itertools.count()


class MetricsWriter:

  def __init__(self, workdir: pathlib.Path, purge_step: int | None = None):
    # purge_step drops events at or after it that an interrupted run left behind,
    # so curves of a resumed run have no duplicated steps. Event files are named
    # after the second they were opened in; the suffix keeps a writer opened in the
    # same second (a quick resume, a rollback) from truncating the previous file.
    suffix = f'.{os.getpid()}-{next(_opened):04d}'
    self.workdir = pathlib.Path(workdir)
    write_failures.quiet_background_failures()
    # A long queue: if the writer thread stalls on a slow file system, the loop goes on
    # (tensorboardX blocks when the queue is full, and forever if the thread then dies).
    self._writer = tensorboardX.SummaryWriter(str(workdir), purge_step=purge_step,
                                              flush_secs=30, filename_suffix=suffix,
                                              max_queue=1000)

  def _check_writing(self) -> None:
    """Raises RunWriteError if tensorboardX's writer thread died on a refused write.

    The thread queues at most 10 events; once it is gone, writing on would block
    forever, so every write checks first.
    """
    worker = self._writer._get_file_writer().event_writer._worker  # pylint: disable=protected-access
    if not worker.is_alive():
      failure = write_failures.thread_failure()
      raise write_failures.stopped(f'TensorBoard events in {self.workdir}',
                                   write_failures.cause(failure) or 'the writer thread died',
                                   self.workdir)

  def scalars(self, step: int, values: dict[str, float]) -> None:
    self._check_writing()
    for tag, value in values.items():
      self._writer.add_scalar(tag, value, step)

  def text(self, tag: str, text: str, step: int) -> None:
    # A fenced block keeps the sample's newlines in TensorBoard's markdown view.
    self._check_writing()
    self._writer.add_text(tag, '```\n' + text + '\n```', step)

  def hparams(self, hparams: dict, metrics: dict[str, float], step: int) -> None:
    """Writes this run's hparams session (start and end) into its own event file.

    tensorboardX's `add_hparams` would write them into a new sub-run folder;
    writing them here puts them next to the run's curves. No experiment summary:
    TensorBoard builds a single run's from its session, and a sweep writes one
    for all its trials (`seqlab.sweeps.hparams`), which a trial's own would
    otherwise compete with (TensorBoard then shows one of them at random).
    """
    self._check_writing()
    _, session_start, session_end = tbx_summary.hparams(hparams, metrics)
    file_writer = self._writer._get_file_writer()  # pylint: disable=protected-access
    for summary in (session_start, session_end):
      file_writer.add_summary(summary)
    self.scalars(step, metrics)

  def close(self) -> None:
    """Flushes and closes; raises RunWriteError if the events could not all be written."""
    self._check_writing()  # closing after the thread died would wait for it forever
    try:
      self._writer.close()
    except OSError as error:  # the final flush
      raise write_failures.from_os_error(error, self.workdir) or error from None


class NullWriter:
  """What processes other than process 0 of a multi-host run write: nothing."""

  def scalars(self, step, values) -> None:
    pass

  def text(self, tag, text, step) -> None:
    pass

  def hparams(self, hparams, metrics, step) -> None:
    pass

  def close(self) -> None:
    pass
