"""What a run does after a NaN/Inf loss, gradient norm or parameter: the one policy.

`train.on_nonfinite='stop'`: the run stops (exit status 3), its last good
checkpoint kept. `'rollback'`: it goes back to its last good checkpoint and
continues with the learning rate times `train.rollback_lr_factor`, at most
`train.max_rollbacks` times; the lowered rate and the count are saved with every
checkpoint, so a resumed run keeps them. A trial of a fused group cannot roll
back alone while the others go on: it stops, and the others continue.
"""

from seqlab.errors import NonFiniteLossError


def after(error: NonFiniteLossError, recorder, fresh_state, can_roll_back: bool):
  """The state to continue from (a rollback), or raises NonFiniteLossError to stop."""
  recorder.ckpts.wait()
  last_good = recorder.ckpts.latest_step('latest')
  kept = f'the last good checkpoint (step {last_good}) is kept' if last_good is not None \
      else 'no checkpoint was written yet'
  train_config, meta = recorder.config.train, recorder.meta
  if train_config.on_nonfinite != 'rollback' or not can_roll_back:
    raise NonFiniteLossError(f'{error}; stopped. {kept[0].upper()}{kept[1:]}; lower '
                             'optim.learning_rate or optim.grad_clip, or set '
                             'train.on_nonfinite=rollback, and re-run') from None
  if meta['rollbacks'] >= train_config.max_rollbacks:
    raise NonFiniteLossError(f'{error} after {meta["rollbacks"]} rollbacks '
                             f'(train.max_rollbacks); stopped, {kept}') from None
  restored = recorder.ckpts.restore('latest', fresh_state)
  state = restored[0] if restored else fresh_state
  back_to = int(state.step)
  meta['rollbacks'] += 1
  meta['lr_scale'] *= train_config.rollback_lr_factor
  recorder.reopen_at(back_to)  # the steps after back_to are trained again
  recorder.print(f'{error}; rolled back to step {back_to}, learning rate '
                 f'x{meta["lr_scale"]:g} (rollback {meta["rollbacks"]} of '
                 f'{train_config.max_rollbacks})')
  return state
