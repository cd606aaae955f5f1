"""Checkpoints of a run (orbax-checkpoint): the latest, and the best by val loss.

`RUN_DIR/checkpoints/latest/<step>/` and `RUN_DIR/checkpoints/best/<step>/`,
one of each kept. A checkpoint holds the whole `TrainState` (params, optimizer
state, step, carried recurrent state, PRNG key) and a small JSON `meta` (best
val loss so far, wall time, ...). Orbax writes into a temporary folder and
renames it when complete, so a partially written checkpoint is never restored.

`read` is the one reader: training resumes through it (into the shardings of
the current run) and analysis loads through it (onto one device), so a run
saved on any number of devices or hosts loads on any other topology. A save
that fails (no space, permission, quota) raises `RunWriteError` and leaves no
unfinished folder behind.
"""

import contextlib
import errno
import os
import pathlib
import shutil

import jax
import orbax.checkpoint as ocp

from seqlab.errors import RunWriteError
from seqlab.errors import SeqlabError
from seqlab.run import directory as rundir
from seqlab.run import write_failures

_TMP_MARK = 'orbax-checkpoint-tmp'


# The layout lives in seqlab.run.directory; these names are kept for the callers here.
steps_on_disk = rundir.steps_on_disk
latest_step_on_disk = rundir.latest_step_on_disk


def remove_unfinished(workdir: pathlib.Path) -> None:
  """Deletes checkpoint folders whose write never completed (a failed or killed save)."""
  root = pathlib.Path(workdir) / rundir.CHECKPOINTS
  for folder in root.glob(f'*/*{_TMP_MARK}*') if root.is_dir() else ():
    shutil.rmtree(folder, ignore_errors=True)


def abstract_like(tree, sharding: jax.sharding.Sharding | None = None):
  """The shapes and dtypes of `tree` as restore targets: on `sharding` if given, else on the
  sharding of each leaf (a concrete array's own placement)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=sharding or getattr(x, 'sharding', None)), tree)


def _shapes_by_path(tree) -> dict[str, tuple]:
  """{'params/layer_0/kernel_ih': shape, ...}: the same names for a TrainState and for the
  nested dicts of orbax's metadata."""
  def name(key):
    for field in ('key', 'name', 'idx'):
      if hasattr(key, field):
        return str(getattr(key, field))
    return str(key)
  return {'/'.join(map(name, path)): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _check_structure(path: pathlib.Path, abstract_state) -> None:
  """Raises SeqlabError, saying which, if the checkpoint is unreadable or holds another model."""
  try:
    saved = ocp.StandardCheckpointHandler().metadata(path / 'state')
  except Exception as e:  # pylint: disable=broad-exception-caught
    raise _unreadable(path, e) from e
  saved = _shapes_by_path(saved)
  wanted = _shapes_by_path(abstract_state)
  for key in sorted(saved.keys() | wanted.keys()):
    if saved.get(key) != wanted.get(key):
      raise SeqlabError(
          f'checkpoint {path} holds another model: {key} is {saved.get(key, "absent")} there '
          f'and {wanted.get(key, "absent")} in this config; use the config.json the run was '
          'trained with (or another --workdir)')


def _first_line(error: BaseException) -> str:
  return (str(error).strip().splitlines() or [''])[0][:160]


def read(path: pathlib.Path, like_state, sharding: jax.sharding.Sharding | None = None):
  """(state, meta) of the checkpoint folder `path`, shaped like `like_state`.

  The arrays land on `sharding` (e.g. one device for analysis) or, if None, on
  the shardings of `like_state`'s arrays (a training run's mesh): never on the
  topology the checkpoint was saved from.
  """
  path = pathlib.Path(path).absolute()
  abstract = abstract_like(like_state, sharding)
  _check_structure(path, abstract)
  try:
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
      restored = checkpointer.restore(path, ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  except Exception as e:  # pylint: disable=broad-exception-caught
    # Orbax raises many types (JSON, tensorstore, value errors) for a damaged checkpoint.
    raise _unreadable(path, e) from e
  return restored['state'], restored['meta']


def _unreadable(path: pathlib.Path, error: BaseException) -> SeqlabError:
  """The one-line error of a checkpoint that cannot be read: refused (permission, I/O) or
  damaged."""
  reason = f'{type(error).__name__}: {_first_line(error)}'
  refused = write_failures.cause(error)  # EACCES, EIO, ...: the file system, not the checkpoint
  if refused:
    return SeqlabError(f'checkpoint {path} cannot be read: {refused} ({reason}); check the '
                       'permissions and the file system')
  return SeqlabError(f'checkpoint {path} is damaged ({reason}); move it out of the run '
                     'directory (the run then resumes from an earlier one, or starts over)')


class Checkpoints:
  """The run's two checkpoint managers; saves are asynchronous, reads go through `read`."""

  def __init__(self, workdir: pathlib.Path):
    self.workdir = pathlib.Path(workdir).absolute()
    root = self.workdir / rundir.CHECKPOINTS
    # Process 0 (which holds the run's lock) removes what a process killed while saving left.
    self.primary = jax.process_index() == 0
    if self.primary:
      remove_unfinished(self.workdir)
    write_failures.quiet_background_failures()

    def options(name):
      # In a multi-host run all processes save together (process 0 writes the metadata); the
      # two managers can save the same step at once, so their barriers need their own names.
      return ocp.CheckpointManagerOptions(
          max_to_keep=1, create=True,
          multiprocessing_options=ocp.options.MultiprocessingOptions(
              barrier_sync_key_prefix=name))

    self._managers = {name: ocp.CheckpointManager(root / name, options=options(name))
                      for name in ('latest', 'best')}
    self.failed = False

  def save(self, which: str, step: int, state, meta: dict) -> None:
    """Starts an (async) save; the arrays are copied off the device before it returns.

    Raises RunWriteError if this save or the one before it failed to write.
    """
    manager = self._managers[which]
    folder = manager.directory
    needed = sum(x.nbytes for x in jax.tree.leaves(state))
    free = shutil.disk_usage(folder).free
    # Refuse before writing anything, rather than fail half-way. Multi-host: every process must
    # take part in a save, so none may refuse alone; a failed write is reported all the same.
    if free < needed and jax.process_count() == 1:
      self._fail(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), folder / str(step),
                 f' ({needed / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB free)')
    with self._reporting_failures(folder / str(step)):
      manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 meta=ocp.args.JsonSave(meta)), force=True)

  def latest_step(self, which: str) -> int | None:
    return self._managers[which].latest_step()

  def restore(self, which: str, like_state, step: int | None = None):
    """(state, meta) from checkpoint `which`, shaped and placed like `like_state`; None if
    there is none."""
    manager = self._managers[which]
    step = manager.latest_step() if step is None else step
    if step is None:
      return None
    return read(manager.directory / str(step), like_state)

  def wait(self) -> None:
    """Waits for the saves in flight; raises RunWriteError if one failed."""
    for manager in self._managers.values():
      with self._reporting_failures(manager.directory):
        manager.wait_until_finished()

  def close(self) -> None:
    """Finishes the saves in flight and closes; after a failed write, only cleans up."""
    for manager in self._managers.values():
      try:
        with self._reporting_failures(manager.directory):
          manager.close()
      except Exception:  # pylint: disable=broad-exception-caught
        if not self.failed:
          raise
    if self.failed and self.primary:
      remove_unfinished(self.workdir)

  @contextlib.contextmanager
  def _reporting_failures(self, path: pathlib.Path):
    """Turns a refused write inside the block into RunWriteError."""
    try:
      yield
    except RunWriteError:
      raise
    except Exception as error:  # pylint: disable=broad-exception-caught
      if write_failures.cause(error):
        self._fail(error, path)
      raise

  def _fail(self, error: BaseException, path: pathlib.Path, detail: str = ''):
    self.failed = True
    path = write_failures.failed_checkpoint(error) or path  # an async save fails a step later
    for manager in self._managers.values():  # let the other saves in flight end first
      try:
        manager.wait_until_finished()
      except Exception:  # pylint: disable=broad-exception-caught
        pass
    if self.primary:
      remove_unfinished(self.workdir)
    raise write_failures.stopped(f'checkpoint {path}', write_failures.cause(error) + detail,
                                 self.workdir) from None
