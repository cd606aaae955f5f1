"""Sampling text: one jitted `jax.lax.scan` over the model's single-step path.

Temperature, top-k, greedy and the PRNG key are traced values, so changing them
does not recompile; only the sample length, batch size and prime length are
shapes. Each generated symbol comes with the entropy (nats) of the
distribution it was drawn from, for temperature studies.
"""

import typing

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seqlab.models import registry


class Samples(typing.NamedTuple):
  ids: jax.Array  # BxL int32: the generated symbols (the prime not included)
  entropy: jax.Array  # BxL float32: entropy in nats of each symbol's sampling distribution


def _keep_top_k(logits_BxV, top_k):
  vocab = logits_BxV.shape[-1]
  kth_largest = jnp.take(jnp.sort(logits_BxV, axis=-1), vocab - jnp.minimum(top_k, vocab),
                         axis=-1)[..., None]
  return jnp.where(logits_BxV < kth_largest, -jnp.inf, logits_BxV)


def sampling_logits(logits_BxV, temperature, top_k):
  """The logits actually sampled from: divided by temperature, outside the top_k at -inf."""
  # The sort runs only when top-k is asked for (a sort per step is slow on CPUs).
  logits_BxV = jax.lax.cond(top_k > 0, _keep_top_k, lambda x, _: x, logits_BxV, top_k)
  return logits_BxV / temperature


def next_token(logits_BxV, key, temperature, top_k, greedy=False):
  """(ids B, entropy B) of the next symbols: drawn from softmax(logits / temperature)
  restricted to the top_k (0 = all), or the argmax when `greedy` (entropy 0)."""
  scaled = sampling_logits(logits_BxV, temperature, top_k)
  log_p = jax.nn.log_softmax(scaled, axis=-1)
  entropy = -jnp.sum(jnp.where(jnp.isfinite(log_p), jnp.exp(log_p) * log_p, 0.0), axis=-1)
  sampled = jax.random.categorical(key, scaled, axis=-1)
  ids = jnp.where(greedy, jnp.argmax(logits_BxV, axis=-1), sampled)
  return ids, jnp.where(greedy, 0.0, entropy)


def make_sampler(model: nn.Module, length: int):
  """Returns `sample(params, prime_ids, num_samples, key, temperature=1, top_k=0,
  greedy=False) -> Samples`.

  The model first reads `prime_ids` (at least one symbol) from the zero state,
  then generates `length` symbols, each fed back as the next input. A model with a
  window (the GPT) reads only the last `context` symbols of a longer prime, and past its
  window conditions on the last `context` symbols (`seqlab.models.gpt`).
  """
  window = registry.window(model.config)

  @jax.jit
  def prime(params, prime_BxP):
    carry = registry.init_carry(model.config, prime_BxP.shape[0])
    logits_BxPxV, carry = model.apply({'params': params}, prime_BxP, carry)
    return carry, logits_BxPxV[:, -1]

  @jax.jit
  def generate(params, carry, logits_BxV, key, temperature, top_k, greedy):
    def step(state, key_t):
      carry, logits = state
      token_B, entropy_B = next_token(logits, key_t, temperature, top_k, greedy)
      logits_Bx1xV, carry = model.apply({'params': params}, token_B[:, None], carry)
      return (carry, logits_Bx1xV[:, 0]), (token_B, entropy_B)

    _, (tokens_LxB, entropy_LxB) = jax.lax.scan(
        step, (carry, logits_BxV), jax.random.split(key, length))
    return Samples(tokens_LxB.T, entropy_LxB.T)

  def sample(params, prime_ids, num_samples: int, key, temperature=1.0, top_k=0, greedy=False):
    prime_ids = np.asarray(prime_ids, np.int32)
    if prime_ids.ndim != 1 or not prime_ids.size:
      raise ValueError('prime_ids must be a non-empty 1-D sequence of symbol ids')
    if window is not None:
      prime_ids = prime_ids[-window:]
    prime_BxP = np.broadcast_to(prime_ids, (num_samples, len(prime_ids)))
    carry, logits_BxV = prime(params, prime_BxP)
    return generate(params, carry, logits_BxV, key, jnp.float32(temperature), jnp.int32(top_k),
                    jnp.bool_(greedy))

  return sample
