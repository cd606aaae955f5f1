"""The train state and the pure train / eval step functions (jit them with `jax.jit`).

Randomness: the dropout key of step t is `fold_in(state.rng, t)`, so the
randomness of a step does not depend on how the run got there (resume-safe).
"""

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from seqlab.models import registry


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: number of updates done
  params: Any
  opt_state: Any
  carry: Any  # recurrent state carried between batches (truncated BPTT)
  rng: jax.Array  # base PRNG key for dropout


def init_state(config, optimizer: optax.GradientTransformation, batch_size: int,
               seed: int) -> TrainState:
  """The state at step 0 of the model that `config` (a `registry.config_of` dataclass) names."""
  params = registry.init_params(config, seed)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params),
                    carry=registry.init_carry(config, batch_size),
                    rng=jax.random.PRNGKey(seed + 1))


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, dropout_rate=None):
  """Returns `train_step(state, inputs_BxT, targets_BxT, reset, lr_scale) -> (state, metrics)`.

  `reset` (a bool scalar) zeroes the carried state before the batch: True for
  the first batch of an epoch in 'streams' mode and for every batch in 'windows'.
  `lr_scale` (a float scalar, default 1) multiplies the learning rate: the
  optimizer's update is linear in it, so scaling the update scales the rate.
  `dropout_rate`, if given, replaces the model config's (it may be traced).
  Metrics are per-step scalars on device; the loop pulls them to the host
  only at log intervals.
  """

  def train_step(state: TrainState, inputs_BxT, targets_BxT, reset, lr_scale=1.0):
    carry = jax.tree.map(lambda c: jnp.where(reset, jnp.zeros_like(c), c), state.carry)
    dropout_key = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
      logits_BxTxV, new_carry = model.apply({'params': params}, inputs_BxT, carry, train=True,
                                            dropout_rate=dropout_rate,
                                            rngs={'dropout': dropout_key})
      loss = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, targets_BxT).mean()
      return loss, new_carry

    (loss, new_carry), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    updates = jax.tree.map(lambda u: u * lr_scale, updates)
    new_state = state.replace(step=state.step + 1,
                              params=optax.apply_updates(state.params, updates),
                              opt_state=opt_state, carry=new_carry)
    metrics = {'loss': loss, 'grad_norm': optax.tree.norm(grads), 'lr': schedule(state.step) * lr_scale}
    return new_state, metrics

  return train_step


def make_eval_step(model: nn.Module):
  """Returns `eval_step(params, carry, inputs, targets, mask) -> (carry, sums)`.

  sums, all reduced over the batch (so they come back replicated, whatever the split):
  'nll', 'count': the masked NLL and its count; with s, c a row's NLL sum and count and m the
  chunk's mean loss, 'dev_sq' = sum (s - m c)^2, 'dev_count' = sum (s - m c) c and
  'count_sq' = sum c^2 (the standard error over windows, without per-row arrays on the
  host, centred so float32 loses nothing to cancellation); 'nll_T', 'count_T': by position.
  """

  def eval_step(params, carry, inputs_BxT, targets_BxT, mask_BxT):
    logits_BxTxV, carry = model.apply({'params': params}, inputs_BxT, carry, train=False)
    nll_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, targets_BxT)
    nll_BxT = nll_BxT * mask_BxT
    nll_B, count_B = jnp.sum(nll_BxT, axis=1), jnp.sum(mask_BxT, axis=1)
    nll, count = jnp.sum(nll_B), jnp.sum(count_B)
    dev_B = nll_B - nll / jnp.maximum(count, 1.0) * count_B
    return carry, {'nll': nll, 'count': count, 'dev_sq': jnp.sum(dev_B * dev_B),
                   'dev_count': jnp.sum(dev_B * count_B), 'count_sq': jnp.sum(count_B * count_B),
                   'nll_T': jnp.sum(nll_BxT, axis=0), 'count_T': jnp.sum(mask_BxT, axis=0)}

  return eval_step


def all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))
