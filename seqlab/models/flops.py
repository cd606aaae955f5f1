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

Added to 6N, the work that is not a weight matmul but grows like one:
  attention     GPT: 12 * layers * width * context per character, as nanoGPT's
                estimate_mfu (the q.k and weights.v products, forward and backward, over the
                full window: the causal mask's saving is not discounted).
  scan          Mamba's selective scan: per layer and character, forward 7 E N FLOPs
                (exp(delta A): 2 E N with exp counted as one; (delta u) B: E N;
                a h + b: 2 E N; C . h: 2 E N), training 3x that (backward ~ 2x forward,
                as for the matmuls) = 21 E N, E = d_inner, N = d_state.
The other elementwise work (gates, norms, GELU, the E- or H-sized scans of minGRU/minLSTM,
Hawk and the LSTM, the softmax, the optimizer) is not counted: it is O(width) per character
against the matmuls' O(width^2), and it is memory-bound rather than FLOP-bound anyway.
"""

from seqlab.models import cells
from seqlab.models import char_rnn
from seqlab.models import gpt
from seqlab.models import hawk
from seqlab.models import mamba
from seqlab.models import min_rnn

MAMBA_SCAN_FORWARD = 7  # FLOPs per (E, N) element per character and layer, forward
TRAIN = 3  # training = forward + backward ~ 3 x forward


def matrices(config) -> list[tuple[str, int, int]]:
  """Every weight matrix a character goes through, as (name, inputs, outputs)."""
  V = config.vocab_size
  if isinstance(config, char_rnn.ModelConfig):
    G, H = cells.GATES[config.cell], config.hidden_size
    out = []
    for i in range(config.num_layers):
      if i or config.embed_size:  # layer 0's one-hot input kernel is a row lookup
        out.append((f'layer_{i}/kernel_ih', H if i else config.embed_size, G * H))
      out.append((f'layer_{i}/kernel_hh', H, G * H))
    return out + [('decoder', H, V)]
  if isinstance(config, min_rnn.MinRNNConfig):
    D, H = config.width, config.hidden
    G = min_rnn._GATES[config.cell]  # pylint: disable=protected-access
    mlp = int(config.mlp_ratio * D)
    out = []
    for i in range(config.num_layers):
      out.append((f'rnn_{i}/gates', D, G * H))
      if H != D:
        out.append((f'rnn_out_{i}', H, D))
      if mlp:
        out += [(f'mlp_in_{i}', D, mlp), (f'mlp_out_{i}', mlp, D)]
    return out + [('decoder', D, V)]  # untied
  if isinstance(config, hawk.HawkConfig):
    D, L, M = config.width, config.lru, config.mlp_expansion * config.width
    out = []
    for i in range(config.num_layers):
      out += [(f'recurrent_{i}/linear_y', D, L), (f'recurrent_{i}/linear_x', D, L),
              (f'recurrent_{i}/rg_lru/input_gate', L, L), (f'recurrent_{i}/rg_lru/a_gate', L, L),
              (f'recurrent_{i}/linear_out', L, D), (f'mlp_{i}/ffw_up_w[0]', D, M),
              (f'mlp_{i}/ffw_up_w[1]', D, M), (f'mlp_{i}/ffw_down', M, D)]
    return out + [('embed (tied head)', D, V)]
  if isinstance(config, mamba.MambaConfig):
    D, E, N, R = config.width, config.d_inner, config.d_state, config.rank
    out = []
    for i in range(config.num_layers):
      out += [(f'mixer_{i}/in_proj', D, 2 * E), (f'mixer_{i}/x_proj', E, R + 2 * N),
              (f'mixer_{i}/dt_proj', R, E), (f'mixer_{i}/out_proj', E, D)]
    return out + [('embedding (tied head)', D, V)]
  if isinstance(config, gpt.GPTConfig):
    D = config.width
    out = []
    for i in range(config.num_layers):
      out += [(f'h_{i}/c_attn', D, 3 * D), (f'h_{i}/attn_c_proj', D, D), (f'h_{i}/c_fc', D, 4 * D),
              (f'h_{i}/mlp_c_proj', 4 * D, D)]
    return out + [('wte (tied head)', D, V)]
  raise TypeError(f'not a model config: {config!r}')


def matmul_params(config) -> int:
  """The weights that multiply an activation (see the module docstring), per model."""
  return sum(inputs * outputs for _, inputs, outputs in matrices(config))


def per_char(config) -> dict:
  """Training FLOPs per character: {'matmul_params', 'matmul', 'attention', 'scan', 'total'}."""
  n = matmul_params(config)
  attention = scan = 0
  if isinstance(config, gpt.GPTConfig):
    attention = 12 * config.num_layers * config.width * config.context
  if isinstance(config, mamba.MambaConfig):
    scan = TRAIN * MAMBA_SCAN_FORWARD * config.num_layers * config.d_inner * config.d_state
  return {'matmul_params': n, 'matmul': 6 * n, 'attention': attention, 'scan': scan,
          'total': 6 * n + attention + scan}
