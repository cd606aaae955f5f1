"""Training FLOPs per character of every model, counted from its config (`per_char`).

The count is nanoGPT's (`GPT.estimate_mfu`): a weight that multiplies an activation in a
matrix product costs 2 FLOPs per character forward and 4 backward (the gradients of the
activation and of the weight), so 6 per character in training; hence 6N, with N the
**matmul parameters** only:

  counted       every Dense kernel; a tied output head (the embedding, read as V x D matrix
                by the decoder: Hawk, Mamba, GPT); Hawk's gated-MLP up-projection.
  not counted   embedding lookups (the input embedding; the GPT's learned positions; the
                LSTM's layer-0 input kernel, which seqlab reads as a row lookup of its
                one-hot input), biases, norm scales, depthwise convolution kernels, the
                RG-LRU's a_param, Mamba's A_log and D. These are a few % of the parameters
                (`registry.count_params` counts them all; `matmul_params` here).

Each model declares its matrices (`registry.Model.matrices`) and, added to 6N, the work that
is not a weight matmul but grows like one (`extra_flops`): the GPT's attention (12 * layers *
width * context per character, as nanoGPT's estimate_mfu, the causal mask's saving not
discounted), Mamba's selective scan (21 E N per layer and character in training). The other elementwise work (gates, norms, GELU, the E- or H-sized scans of minGRU/minLSTM,
Hawk and the LSTM, the softmax, the optimizer) is not counted: it is O(width) per character
against the matmuls' O(width^2), and it is memory-bound rather than FLOP-bound anyway.
"""

from seqlab.models import registry


def matrices(config) -> list[tuple[str, int, int]]:
  """Every weight matrix a character goes through, as (name, inputs, outputs): the model's
  own declaration (`registry.Model.matrices`)."""
  return list(registry.of(config).matrices(config))


def matmul_params(config) -> int:
  """The weights that multiply an activation (see the module docstring), per model."""
  return sum(inputs * outputs for _, inputs, outputs in matrices(config))


def per_char(config) -> dict:
  """Training FLOPs per character: {'matmul_params', 'matmul', <the model's extra kinds, e.g.
  'attention' or 'scan'>, 'total'}."""
  n = matmul_params(config)
  declared = registry.of(config).extra_flops
  extra = {kind: int(value) for kind, value in (declared(config) if declared else {}).items()}
  return {'matmul_params': n, 'matmul': 6 * n, **extra, 'total': 6 * n + sum(extra.values())}
