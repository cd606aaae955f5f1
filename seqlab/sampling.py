"""Sampling text: one jitted `jax.lax.scan` over the model's single-step path.

Temperature, top-k and the PRNG key are traced values, so changing them does
not recompile; only the sample length, batch size and prime length are shapes.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seqlab import model as model_lib


def next_token(logits_BxV, key, temperature, top_k):
  """Samples from softmax(logits / temperature) restricted to the top_k (0 = all)."""
  vocab = logits_BxV.shape[-1]
  k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
  kth_largest = jnp.take(jnp.sort(logits_BxV, axis=-1), vocab - k, axis=-1)[..., None]
  logits_BxV = jnp.where(logits_BxV < kth_largest, -jnp.inf, logits_BxV)
  return jax.random.categorical(key, logits_BxV / temperature, axis=-1)


def make_sampler(model: nn.Module, length: int):
  """Returns `sample(params, prime_ids, num_samples, key, temperature, top_k) -> ids BxL`.

  The model first reads `prime_ids` (at least one symbol) from the zero state,
  then generates `length` symbols, each fed back as the next input.
  """
  config: model_lib.ModelConfig = model.config

  @jax.jit
  def prime(params, prime_BxP):
    carry = model_lib.init_carry(config, prime_BxP.shape[0])
    logits_BxPxV, carry = model.apply({'params': params}, prime_BxP, carry)
    return carry, logits_BxPxV[:, -1]

  @jax.jit
  def generate(params, carry, logits_BxV, key, temperature, top_k):
    def step(state, key_t):
      carry, logits = state
      token_B = next_token(logits, key_t, temperature, top_k)
      logits_Bx1xV, carry = model.apply({'params': params}, token_B[:, None], carry)
      return (carry, logits_Bx1xV[:, 0]), token_B

    _, tokens_LxB = jax.lax.scan(step, (carry, logits_BxV), jax.random.split(key, length))
    return tokens_LxB.T

  def sample(params, prime_ids, num_samples: int, key, temperature=1.0, top_k=0):
    prime_BxP = np.broadcast_to(np.asarray(prime_ids, np.int32), (num_samples, len(prime_ids)))
    carry, logits_BxV = prime(params, prime_BxP)
    return generate(params, carry, logits_BxV, key, jnp.float32(temperature), jnp.int32(top_k))

  return sample
