"""The zoo's bf16 rule (`model.matmul_dtype`): bf16 matmul inputs, fp32 results.

Every matmul of minGRU/minLSTM, Hawk, Mamba and the GPT goes through `dense`, `einsum` or
`attend`: with 'bfloat16' its inputs and kernel are cast to bf16 and it returns float32
(`preferred_element_type`, fp32 accumulation, as `recurrence.matmul` does for the char-rnn);
biases, parameters and everything that is not a matmul (norms, gates, scans, softmax, the
carry) stay float32. With 'float32' they are exactly the plain Flax / jnp ops.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqlab.errors import SeqlabError
from seqlab.models import recurrence



def check_matmul_dtype(value) -> None:
  """The one-line error of an unknown `model.matmul_dtype` (as char_rnn's)."""
  if value not in recurrence.MATMUL_DTYPES:
    raise SeqlabError(f'model.matmul_dtype must be one of {recurrence.MATMUL_DTYPES}, '
                      f'got {value!r}')


def _low_precision_dot_general(lhs, rhs, dimension_numbers, precision=None,
                               preferred_element_type=None, *, dtype: str):
  del preferred_element_type  # always float32
  return jax.lax.dot_general(lhs.astype(dtype), rhs.astype(dtype), dimension_numbers,
                             precision=precision, preferred_element_type=jnp.float32)


def dense(features: int, matmul_dtype: str = 'float32', **kwargs) -> nn.Dense:
  """`nn.Dense` whose matmul follows `matmul_dtype` (the same parameters either way)."""
  if matmul_dtype == 'float32':
    return nn.Dense(features, **kwargs)
  return nn.Dense(features, dot_general=functools.partial(_low_precision_dot_general,
                                                          dtype=matmul_dtype), **kwargs)


def einsum(subscripts: str, a, b, matmul_dtype: str = 'float32'):
  """`jnp.einsum` of two operands, with bf16 inputs and an fp32 result unless float32."""
  if matmul_dtype == 'float32':
    return jnp.einsum(subscripts, a, b)
  return recurrence.matmul(a, b, matmul_dtype, subscripts)


def attend(embed: nn.Embed, x, matmul_dtype: str = 'float32'):
  """`embed.attend(x)` (x @ embedding^T: a tied output layer) in `matmul_dtype`."""
  if matmul_dtype == 'float32':
    return embed.attend(x)
  return recurrence.matmul(x, embed.embedding.T, matmul_dtype)
