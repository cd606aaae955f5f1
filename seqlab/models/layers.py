"""Building blocks the models share (none of them is a model): dropout with a rate that may be
traced, a causal depthwise convolution with its state carried, PyTorch's default initialisers."""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class Dropout(nn.Module):
  """`nn.Dropout` (same masks for the same key), with a rate that may be a traced value.

  A traced rate lets fused sweep trials (`seqlab.sweeps.fused`) differ in dropout
  inside one compiled step; rate 0 keeps every unit, as `nn.Dropout` does.
  """
  rate: Any

  @nn.compact
  def __call__(self, x, deterministic: bool):
    if deterministic or (isinstance(self.rate, (int, float)) and self.rate == 0):
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng('dropout'), p=keep, shape=x.shape)
    return jax.lax.select(mask, x / keep, jnp.zeros_like(x))


def torch_linear(scale=1.0, **axes):
  """PyTorch's default Linear/Conv1d kernel init, uniform(+-1/sqrt(fan_in)), times `scale`."""
  return nn.initializers.variance_scaling(scale ** 2 / 3, 'fan_in', 'uniform', **axes)


def uniform(bound):
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class CausalConv1D(nn.Module):
  """Depthwise causal conv over time: y_t = b + sum_k w[k] * x_{t-K+1+k} (PyTorch's Conv1d with
  groups=E and padding K-1, cut to T), where x_{-K+1} .. x_{-1} come from the carried state."""
  width: int  # K

  @nn.compact
  def __call__(self, x_BxTxE, state_BxKm1xE):
    K, T = self.width, x_BxTxE.shape[1]
    w_KxE = self.param('kernel', torch_linear(in_axis=0, out_axis=1), (K, x_BxTxE.shape[-1]))
    b_E = self.param('bias', uniform(1 / math.sqrt(K)), (x_BxTxE.shape[-1],))
    full_BxSxE = jnp.concatenate([state_BxKm1xE, x_BxTxE], axis=1)  # S = K - 1 + T
    y_BxTxE = b_E + sum(full_BxSxE[:, k:k + T] * w_KxE[k] for k in range(K))
    return y_BxTxE, full_BxSxE[:, T:]  # the last K - 1 inputs (also when T < K - 1)
