"""Optimizer and learning-rate schedule from `config.optim`, all evaluated inside jit."""

import jax.numpy as jnp
import optax

from seqlab.errors import SeqlabError


def make_schedule(optim_config, num_steps: int, steps_per_epoch: int) -> optax.Schedule:
  """lr(step) for 'constant', 'cosine' (linear warmup, cosine decay) or 'exponential'.

  'exponential' is char-rnn's: after `decay_after_epochs` epochs the rate is
  multiplied by `decay_rate` once per epoch.
  """
  lr, kind = optim_config.learning_rate, optim_config.schedule
  warmup = min(optim_config.warmup_steps, num_steps)
  if kind == 'constant':
    return optax.constant_schedule(lr)
  if kind == 'cosine':
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=warmup, decay_steps=max(num_steps, warmup + 1),
        end_value=lr * optim_config.final_lr_fraction)
  if kind == 'exponential':
    decay_after, rate = optim_config.decay_after_epochs, optim_config.decay_rate

    def schedule(step):
      epoch = step // steps_per_epoch
      return lr * rate ** jnp.maximum(0, epoch - decay_after + 1).astype(jnp.float32)
    return schedule
  raise SeqlabError(f"unknown optim.schedule {kind!r}; use 'constant', 'cosine' or 'exponential'")


# The optimizer's numeric settings: `make_optimizer(..., values=...)` may give them
# as traced values, so that fused sweep trials can differ in them in one compiled step.
NUMERIC_FIELDS = ('b1', 'b2', 'weight_decay', 'grad_clip')


def make_optimizer(optim_config, schedule: optax.Schedule,
                   values: dict | None = None) -> optax.GradientTransformation:
  """The optax chain (clipping, then the optimizer) of `optim_config`.

  `values` overrides NUMERIC_FIELDS (e.g. with traced scalars); whether to clip at
  all is still decided by `optim_config.grad_clip > 0`.
  """
  value = {name: optim_config[name] for name in NUMERIC_FIELDS} | (values or {})
  name = optim_config.name
  if name == 'adam':
    opt = optax.adam(schedule, b1=value['b1'], b2=value['b2'])
  elif name == 'adamw':
    opt = optax.adamw(schedule, b1=value['b1'], b2=value['b2'],
                      weight_decay=value['weight_decay'])
  elif name == 'rmsprop':
    opt = optax.rmsprop(schedule, decay=value['b2'])
  else:
    raise SeqlabError(f"unknown optim.name {name!r}; use 'adam', 'adamw' or 'rmsprop'")
  # The chain has the same structure with and without clipping, so that a run
  # can be resumed with another grad_clip.
  clip = optax.clip_by_global_norm(value['grad_clip']) if optim_config.grad_clip > 0 \
      else optax.identity()
  return optax.chain(clip, opt)
