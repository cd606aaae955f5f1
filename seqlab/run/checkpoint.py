"""Checkpoints of a run (orbax-checkpoint): the latest, and the best by val loss.

`RUN_DIR/checkpoints/latest/<step>/` and `RUN_DIR/checkpoints/best/<step>/`,
one of each kept. A checkpoint holds the whole `TrainState` (params, optimizer
state, step, carried recurrent state, PRNG key) and a small JSON `meta` (best
val loss so far, wall time, ...). Orbax writes into a temporary folder and
renames it when complete, so a partially written checkpoint is never restored.
"""

import pathlib

import jax
import orbax.checkpoint as ocp

from seqlab.errors import SeqlabError


def steps_on_disk(workdir: pathlib.Path, which: str = 'latest') -> list[int]:
  """The steps of the complete checkpoints in `which`, sorted, read without creating anything.

  Orbax writes into `<step>.orbax-checkpoint-tmp-*` and renames when done, so
  only all-digit folder names are complete checkpoints.
  """
  folder = pathlib.Path(workdir) / 'checkpoints' / which
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) \
      if folder.is_dir() else []


def latest_step_on_disk(workdir: pathlib.Path, which: str = 'latest') -> int | None:
  """The step of the newest complete checkpoint, read without creating anything."""
  return max(steps_on_disk(workdir, which), default=None)


class Checkpoints:

  def __init__(self, workdir: pathlib.Path):
    root = pathlib.Path(workdir).absolute() / 'checkpoints'

    def options(name):
      # In a multi-host run all processes save together (process 0 writes the metadata); the
      # two managers can save the same step at once, so their barriers need their own names.
      return ocp.CheckpointManagerOptions(
          max_to_keep=1, create=True,
          multiprocessing_options=ocp.options.MultiprocessingOptions(
              barrier_sync_key_prefix=name))

    self._managers = {name: ocp.CheckpointManager(root / name, options=options(name))
                      for name in ('latest', 'best')}

  def save(self, which: str, step: int, state, meta: dict) -> None:
    """Starts an (async) save; the arrays are copied off the device before it returns."""
    self._managers[which].save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                      meta=ocp.args.JsonSave(meta)), force=True)

  def latest_step(self, which: str) -> int | None:
    return self._managers[which].latest_step()

  def restore(self, which: str, like_state, step: int | None = None):
    """(state, meta) from checkpoint `which`, shaped like `like_state`; None if there is none."""
    manager = self._managers[which]
    step = manager.latest_step() if step is None else step
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
    try:
      restored = manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                        meta=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-exception-caught
      # Orbax raises many types (JSON, tensorstore, value errors) for a damaged checkpoint.
      reason = (str(e).strip().splitlines() or [''])[0][:160]
      raise SeqlabError(
          f'checkpoint {manager.directory / str(step)} cannot be read ({type(e).__name__}: '
          f'{reason}); it is damaged: move it out of the run directory to start the run over, '
          'or use another --workdir') from e
    return restored['state'], restored['meta']

  def wait(self) -> None:
    for manager in self._managers.values():
      manager.wait_until_finished()

  def close(self) -> None:
    for manager in self._managers.values():
      manager.close()
