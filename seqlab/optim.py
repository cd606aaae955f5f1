"""Optimizer and learning-rate schedule from `config.optim`, all evaluated inside jit."""

import math
import numbers

import jax
import jax.numpy as jnp
import optax

from seqlab.errors import SeqlabError

NAMES = ('adam', 'adamw', 'rmsprop')
SCHEDULES = ('constant', 'cosine', 'exponential')
DECAY = ('all', 'matrices')  # what adamw's weight decay applies to

# field: (test, the allowed range as the error states it); values must also be finite.
_RANGES = {
    'learning_rate': (lambda x: x > 0, '> 0'),
    'b1': (lambda x: 0 <= x < 1, 'in [0, 1)'),
    'b2': (lambda x: 0 <= x < 1, 'in [0, 1)'),
    'weight_decay': (lambda x: x >= 0, '>= 0'),
    'grad_clip': (lambda x: x >= 0, '>= 0 (0: no clipping)'),
    'warmup_steps': (lambda x: x >= 0, '>= 0'),
    'final_lr_fraction': (lambda x: 0 <= x <= 1, 'in [0, 1]'),
    'decay_rate': (lambda x: 0 < x <= 1, 'in (0, 1]'),
    'decay_after_epochs': (lambda x: x >= 0, '>= 0'),
}


def _words(options) -> str:
  quoted = [repr(o) for o in options]
  return ', '.join(quoted[:-1]) + ' or ' + quoted[-1]


def check(optim_config) -> None:
  """Raises SeqlabError, one line naming the field, its value and the allowed range,
  for the first field of `optim_config` that is out of range.

  Checks every field present (whichever schedule uses it), the config's own Python
  values only: make_optimizer's traced `values` are the trials' own configs,
  each checked when its run is built. Called by make_schedule and make_optimizer.
  """
  if optim_config.get('name', 'adam') not in NAMES:
    raise SeqlabError(f'unknown optim.name {optim_config.name!r}; use {_words(NAMES)}')
  for field, (test, allowed) in _RANGES.items():
    if field not in optim_config:  # e.g. the bench's optimizer, which has no schedule fields
      continue
    value = optim_config[field]
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and \
        math.isfinite(value) and test(value)
    if not ok:
      raise SeqlabError(f'optim.{field} must be {allowed}, got {value!r}')
  if optim_config.get('decay', 'all') not in DECAY:
    raise SeqlabError(f'unknown optim.decay {optim_config.decay!r}; use {_words(DECAY)}')
  if optim_config.get('schedule', 'constant') not in SCHEDULES:
    raise SeqlabError(f'unknown optim.schedule {optim_config.schedule!r}; use '
                      f'{_words(SCHEDULES)}')


def make_schedule(optim_config, num_steps: int, steps_per_epoch: int) -> optax.Schedule:
  """lr(step) for 'constant', 'cosine' (linear warmup, cosine decay) or 'exponential'.

  'exponential' is char-rnn's: after `decay_after_epochs` epochs the rate is
  multiplied by `decay_rate` once per epoch.
  """
  check(optim_config)
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
  raise AssertionError(kind)  # check() refuses other schedules


# The optimizer's numeric settings: `make_optimizer(..., values=...)` may give them
# as traced values, so that fused sweep trials can differ in them in one compiled step.
NUMERIC_FIELDS = ('b1', 'b2', 'weight_decay', 'grad_clip')


def make_optimizer(optim_config, schedule: optax.Schedule,
                   values: dict | None = None) -> optax.GradientTransformation:
  """The optax chain (clipping, then the optimizer) of `optim_config`.

  `values` overrides NUMERIC_FIELDS (e.g. with traced scalars); whether to clip at
  all is still decided by `optim_config.grad_clip > 0`.
  """
  check(optim_config)
  value = {name: optim_config[name] for name in NUMERIC_FIELDS} | (values or {})
  name = optim_config.name
  if name == 'adam':
    opt = optax.adam(schedule, b1=value['b1'], b2=value['b2'])
  elif name == 'adamw':
    # decay='matrices' as nanoGPT's configure_optimizers: parameters of 2 or more
    # dimensions (kernels, embeddings) decay; biases and norm scales do not.
    mask = None if optim_config.get('decay', 'all') == 'all' else \
        (lambda params: jax.tree.map(lambda p: p.ndim >= 2, params))
    opt = optax.adamw(schedule, b1=value['b1'], b2=value['b2'],
                      weight_decay=value['weight_decay'], mask=mask)
  elif name == 'rmsprop':
    opt = optax.rmsprop(schedule, decay=value['b2'])
  else:
    raise AssertionError(name)  # check() refuses other names
  # The chain has the same structure with and without clipping, so that a run
  # can be resumed with another grad_clip.
  clip = optax.clip_by_global_norm(value['grad_clip']) if optim_config.grad_clip > 0 \
      else optax.identity()
  return optax.chain(clip, opt)
