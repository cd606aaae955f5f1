"""seqlab's minGRU / minLSTM against lucidrains/minGRU-pytorch's `minLM`, on shared weights.

  python experiments/zoo/references/min_rnn_vs_mingru_pytorch.py [--out FILE.json]

Needs torch and the reference package in a virtualenv of its own, never the project's (PyTorch
is a reference peer here, not a dependency of seqlab); README.md beside this file has the
commands, the pinned reference (minGRU-pytorch 0.2.1) and the measured numbers.

The reference configuration that is the same function as seqlab's min_rnn (log_space=True,
conv_width=0, dropout 0): minLM(num_tokens=V, dim=width, depth=num_layers, ff_mult=mlp_ratio,
expansion=expansion, use_lstm=(cell == 'minlstm'), enable_conv=False, dropout=0.). Both are
pre-RMSNorm residual blocks x += OutProj(MinRNN(RMSNorm(x))), x += MLP(RMSNorm(x)) (4x, GELU),
a final RMSNorm and an untied decoder; the out-projection exists in both iff hidden != width.
The reference's conv (enable_conv) is another function (x += PointwiseConv(DepthwiseConv(x))
before the block's norm, outside the min-RNN's branch), so conv_width > 0 has no counterpart.

Printed, for each model (minGRU and minLSTM from configs/zoo.py at 0.8M, and a small size
with expansion 1.5 so that the out-projection is there too):
  * the parameter counts and their difference (the biases seqlab has and the reference lacks),
  * the initialisation std of each parameter group in both, beside the formula,
  * max |logit difference| over a batch of random tokens (B x T) from the zero state, seqlab's
    weights copied into the reference: as-is, then with each deviation aligned in turn (GELU,
    RMSNorm eps, biases, init), and each of the two function deviations alone;
  * one-token decoding (the reference's `prev_hiddens` path) against seqlab's full forward;
  * the float32 floor: each against the reference in float64, and over a shorter sequence (the
    reference's parallel scan, Heinsen's cumsum + logcumsumexp, loses digits as T grows).
The shared weights are seqlab's init with every bias and norm scale drawn at random (so that
none is at its initial 0 or 1); the extra biases are zeroed where the reference lacks them.
seqlab is used only through seqlab.models.registry's config_of, init_params, module_of and
init_carry; the parameter names it maps are those of seqlab/models/min_rnn.py.
"""

import argparse
import copy
import datetime
import json
import math
import pathlib
import platform
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # `python experiments/zoo/references/...py` as well as `-m`
  sys.path.insert(0, str(ROOT))

# pylint: disable=wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

import minGRU_pytorch
from minGRU_pytorch.minLM import minLM

from configs import zoo
from seqlab.models import registry

VOCAB = 65  # tiny Shakespeare's characters
BATCH, LENGTH = 4, 256
DECODE = 32  # tokens decoded one at a time
BIAS_STD = 0.1  # the random biases and norm-scale offsets of the shared weights
SEED = 0


def model_groups():
  """(name, model group) for each compared model: the zoo's two at 0.8M and a small size."""
  out = []
  for variant in ('mingru', 'minlstm'):
    group = zoo.get_config(variant).model
    out.append((f'{variant} 0.8M (configs/zoo.py:{variant})', group))
    small = copy.deepcopy(group)
    small.width, small.num_layers, small.expansion = 32, 2, 1.5
    out.append((f'{variant} small (width 32, 2 layers, expansion 1.5)', small))
  return out


# ---- seqlab

def seqlab_forward(config, params, tokens):
  module = registry.module_of(config)
  logits, _ = module.apply({'params': params}, jnp.asarray(tokens),
                           registry.init_carry(config, tokens.shape[0]))
  return np.asarray(logits, np.float64)


def extra_bias_names(config):
  """seqlab's biases that the reference has no place for: the gate Dense's, OutProj's, the
  decoder's."""
  names = [(f'rnn_{i}', 'gates', 'bias') for i in range(config.num_layers)]
  if config.hidden != config.width:
    names += [(f'rnn_out_{i}', 'bias') for i in range(config.num_layers)]
  return names + [('decoder', 'bias')]


def get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def with_leaf(tree, path, value):
  tree = dict(tree)
  tree[path[0]] = value if len(path) == 1 else with_leaf(tree[path[0]], path[1:], value)
  return tree


def randomised(params, seed):
  """seqlab's initial weights with every bias ~ N(0, BIAS_STD^2) and every norm scale
  1 + N(0, BIAS_STD^2), as a trained model has them (at init they are 0 and 1)."""
  rng = np.random.default_rng(seed)
  def leaf(path, x):
    name = path[-1].key
    if name == 'bias':
      return jnp.asarray(rng.normal(0, BIAS_STD, x.shape), jnp.float32)
    if name == 'scale':
      return jnp.asarray(1 + rng.normal(0, BIAS_STD, x.shape), jnp.float32)
    return x
  return jax.tree_util.tree_map_with_path(leaf, params)


# ---- the reference

def reference_of(config):
  if config.conv_width or not config.log_space or config.dropout:
    raise SystemExit('the reference minLM is log-space, without a conv inside the min-RNN '
                     'branch, here at dropout 0')
  return minLM(num_tokens=config.vocab_size, dim=config.width, depth=config.num_layers,
               ff_mult=config.mlp_ratio, expansion=config.expansion,
               use_lstm=config.cell == 'minlstm', enable_conv=False, dropout=0.)


def rnn_of(layer):
  return layer[2]


def gate_linear(rnn):
  return rnn.to_hidden_and_gate if hasattr(rnn, 'to_hidden_and_gate') \
      else rnn.to_hidden_and_f_i_gate


def gate_order(config):
  """Column permutation from seqlab's gate Dense blocks to the reference's: seqlab [k_z | h~]
  (minGRU), [k_f | k_i | h~] (minLSTM); the reference [h~ | gate], [h~ | f | i]."""
  h = config.hidden
  blocks = [1, 0] if config.cell == 'mingru' else [2, 0, 1]
  return np.concatenate([np.arange(b * h, (b + 1) * h) for b in blocks])


def add_biases(ref, config):
  """Give the reference's bias-free Linears (gate, to_out, to_logits) a bias, zero."""
  def biased(linear):
    new = nn.Linear(linear.in_features, linear.out_features, bias=True)
    with torch.no_grad():
      new.weight.copy_(linear.weight)
      new.bias.zero_()
    return new
  for layer in ref.layers:
    rnn = rnn_of(layer)
    if hasattr(rnn, 'to_hidden_and_gate'):
      rnn.to_hidden_and_gate = biased(rnn.to_hidden_and_gate)
    else:
      rnn.to_hidden_and_f_i_gate = biased(rnn.to_hidden_and_f_i_gate)
    if config.hidden != config.width:
      rnn.to_out = biased(rnn.to_out)
  ref.to_logits = biased(ref.to_logits)


def set_gelu(ref, approximate):
  for layer in ref.layers:
    layer[4][1] = nn.GELU(approximate=approximate)


def set_eps(ref, eps):
  for module in ref.modules():
    if isinstance(module, nn.RMSNorm):
      module.eps = eps


def t(x):
  return torch.from_numpy(np.asarray(x, np.float32).copy())


def copy_into_reference(params, config, ref):
  """seqlab's weights into the reference; seqlab's extra biases go where the reference has a
  bias (after add_biases) and are dropped where it has none."""
  order = gate_order(config)
  with torch.no_grad():
    ref.token_emb.weight.copy_(t(params['embed']['embedding']))
    for i, layer in enumerate(ref.layers):
      _, norm, rnn, ff_norm, ff, _ = layer
      norm.weight.copy_(t(params[f'rnn_norm_{i}']['scale']))
      gates = params[f'rnn_{i}']['gates']
      gate_linear(rnn).weight.copy_(t(np.asarray(gates['kernel'])[:, order].T))
      if gate_linear(rnn).bias is not None:
        gate_linear(rnn).bias.copy_(t(np.asarray(gates['bias'])[order]))
      if config.hidden != config.width:
        rnn.to_out.weight.copy_(t(np.asarray(params[f'rnn_out_{i}']['kernel']).T))
        if rnn.to_out.bias is not None:
          rnn.to_out.bias.copy_(t(params[f'rnn_out_{i}']['bias']))
      ff_norm.weight.copy_(t(params[f'mlp_norm_{i}']['scale']))
      for k, name in ((0, 'mlp_in'), (2, 'mlp_out')):
        ff[k].weight.copy_(t(np.asarray(params[f'{name}_{i}']['kernel']).T))
        ff[k].bias.copy_(t(params[f'{name}_{i}']['bias']))
    ref.norm.weight.copy_(t(params['final_norm']['scale']))
    ref.to_logits.weight.copy_(t(np.asarray(params['decoder']['kernel']).T))
    if ref.to_logits.bias is not None:
      ref.to_logits.bias.copy_(t(params['decoder']['bias']))


def copy_from_reference(ref, config, params):
  """The reference's weights into seqlab's tree (its extra biases zero): seqlab with the
  reference's initialisation."""
  inverse = np.argsort(gate_order(config))
  n = lambda x: jnp.asarray(x.detach().numpy())
  p = with_leaf(params, ('embed', 'embedding'), n(ref.token_emb.weight))
  for i, layer in enumerate(ref.layers):
    _, norm, rnn, ff_norm, ff, _ = layer
    p = with_leaf(p, (f'rnn_norm_{i}', 'scale'), n(norm.weight))
    p = with_leaf(p, (f'rnn_{i}', 'gates', 'kernel'), n(gate_linear(rnn).weight.T)[:, inverse])
    if config.hidden != config.width:
      p = with_leaf(p, (f'rnn_out_{i}', 'kernel'), n(rnn.to_out.weight.T))
    p = with_leaf(p, (f'mlp_norm_{i}', 'scale'), n(ff_norm.weight))
    for k, name in ((0, 'mlp_in'), (2, 'mlp_out')):
      p = with_leaf(p, (f'{name}_{i}', 'kernel'), n(ff[k].weight.T))
      p = with_leaf(p, (f'{name}_{i}', 'bias'), n(ff[k].bias))
  p = with_leaf(p, ('final_norm', 'scale'), n(ref.norm.weight))
  p = with_leaf(p, ('decoder', 'kernel'), n(ref.to_logits.weight.T))
  for path in extra_bias_names(config):
    p = with_leaf(p, path, jnp.zeros_like(get(p, path)))
  return p


def reference_forward(ref, tokens):
  with torch.no_grad():
    return ref(torch.from_numpy(tokens).long()).double().numpy()


def reference_decode(ref, tokens):
  """Logits of tokens[:, :n] fed one at a time through the reference's prev_hiddens path."""
  out, hiddens = [], None
  with torch.no_grad():
    for step in range(tokens.shape[1]):
      logits, hiddens = ref(torch.from_numpy(tokens[:, step:step + 1]).long(),
                            return_prev_hiddens=True, prev_hiddens=hiddens)
      out.append(logits.double().numpy())
  return np.concatenate(out, axis=1)


# ---- the checks

def init_stds(config, seqlab_params, ref):
  """{group: (seqlab std, reference std, formula)} at initialisation (layer 0's tensors)."""
  d, h, v = config.width, config.hidden, config.vocab_size
  m = int(config.mlp_ratio * d)
  s = lambda x: float(np.std(np.asarray(x, np.float64)))
  r = lambda x: float(x.detach().double().std(unbiased=False))
  layer = ref.layers[0]
  rows = {
      'embedding': (s(seqlab_params['embed']['embedding']), r(ref.token_emb.weight),
                    f'seqlab N(0, 1/D) = {1 / math.sqrt(d):.4f}; reference N(0, 1)'),
      'gate kernel': (s(seqlab_params['rnn_0']['gates']['kernel']),
                      r(gate_linear(rnn_of(layer)).weight),
                      f'1/sqrt(D) = {1 / math.sqrt(d):.4f} vs 1/sqrt(3D) = '
                      f'{1 / math.sqrt(3 * d):.4f}'),
      'mlp_in kernel': (s(seqlab_params['mlp_in_0']['kernel']), r(layer[4][0].weight),
                        f'1/sqrt(D) = {1 / math.sqrt(d):.4f} vs 1/sqrt(3D) = '
                        f'{1 / math.sqrt(3 * d):.4f}'),
      'mlp_out kernel': (s(seqlab_params['mlp_out_0']['kernel']), r(layer[4][2].weight),
                         f'1/sqrt(M) = {1 / math.sqrt(m):.4f} vs 1/sqrt(3M) = '
                         f'{1 / math.sqrt(3 * m):.4f}'),
      'decoder kernel': (s(seqlab_params['decoder']['kernel']), r(ref.to_logits.weight),
                         f'1/sqrt(D) = {1 / math.sqrt(d):.4f} vs 1/sqrt(3D) = '
                         f'{1 / math.sqrt(3 * d):.4f}'),
      'mlp_in bias': (s(seqlab_params['mlp_in_0']['bias']), r(layer[4][0].bias),
                      f'seqlab 0; reference U(+-1/sqrt(D)): {1 / math.sqrt(3 * d):.4f}'),
      'mlp_out bias': (s(seqlab_params['mlp_out_0']['bias']), r(layer[4][2].bias),
                       f'seqlab 0; reference U(+-1/sqrt(M)): {1 / math.sqrt(3 * m):.4f}'),
  }
  if h != d:
    rows['rnn_out kernel'] = (s(seqlab_params['rnn_out_0']['kernel']),
                              r(rnn_of(layer).to_out.weight),
                              f'1/sqrt(H) = {1 / math.sqrt(h):.4f} vs 1/sqrt(3H) = '
                              f'{1 / math.sqrt(3 * h):.4f}')
  return rows


def loss_of(logits, tokens):
  """Mean next-token cross-entropy (nats) of logits B x T x V on tokens."""
  lg = logits[:, :-1]
  lse = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1)
  picked = np.take_along_axis(lg, tokens[:, 1:, None], -1)[..., 0]
  return float(np.mean(lse - picked))


def compare(name, group):
  config = registry.config_of(group, VOCAB)
  rng = np.random.default_rng(SEED)
  tokens = rng.integers(0, VOCAB, (BATCH, LENGTH)).astype(np.int32)
  init = registry.init_params(config, SEED)
  torch.manual_seed(SEED)
  ref = reference_of(config)
  report = {'model': name, 'config': repr(config)}

  n_seqlab = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(init))
  n_ref = sum(p.numel() for p in ref.parameters())
  extra = sum(int(np.size(get(init, p))) for p in extra_bias_names(config))
  report['params'] = {'seqlab': n_seqlab, 'reference': n_ref, 'difference': n_seqlab - n_ref,
                      'seqlab extra biases': extra}

  # Initialisation: each model's own, and what it gives at the start of training.
  report['init_std'] = init_stds(config, init, ref)
  own_seqlab, own_ref = seqlab_forward(config, init, tokens), reference_forward(ref, tokens)
  report['at_init'] = {
      'seqlab logit std': float(own_seqlab.std()), 'reference logit std': float(own_ref.std()),
      'seqlab loss': loss_of(own_seqlab, tokens), 'reference loss': loss_of(own_ref, tokens),
      'uniform loss ln V': math.log(VOCAB)}

  # Shared weights: seqlab's init with random biases and norm scales.
  shared = randomised(init, SEED + 1)
  zeroed = shared
  for path in extra_bias_names(config):
    zeroed = with_leaf(zeroed, path, jnp.zeros_like(get(zeroed, path)))
  diff = lambda a, b: float(np.max(np.abs(a - b)))
  steps = []

  def step(label, params, reference):
    ours = seqlab_forward(config, params, tokens)
    theirs = reference_forward(reference, tokens)
    steps.append({'step': label, 'max_abs_logit_diff': diff(ours, theirs),
                  'max_abs_logit': float(np.max(np.abs(ours)))})
    return ours

  ref = reference_of(config)  # defaults: exact GELU, eps = float32 machine epsilon, no biases
  copy_into_reference(zeroed, config, ref)
  step('(a) as-is: reference GELU exact, RMSNorm eps default; seqlab extra biases zeroed',
       zeroed, ref)
  set_gelu(ref, 'tanh')
  step('(b1) + GELU aligned (reference nn.GELU(approximate="tanh"), as flax nn.gelu)',
       zeroed, ref)
  set_eps(ref, 1e-6)
  step('(b2) + RMSNorm eps aligned (reference eps 1e-6, as flax nn.RMSNorm)', zeroed, ref)
  # Each of the two function deviations alone (the other aligned), on the weights of (a).
  alone = reference_of(config)
  copy_into_reference(zeroed, config, alone)
  set_eps(alone, 1e-6)
  report['alone'] = {'GELU alone (reference exact, eps aligned)': diff(
      seqlab_forward(config, zeroed, tokens), reference_forward(alone, tokens))}
  set_gelu(alone, 'tanh')
  set_eps(alone, None)
  report['alone']['RMSNorm eps alone (reference default, GELU aligned)'] = diff(
      seqlab_forward(config, zeroed, tokens), reference_forward(alone, tokens))
  copy_into_reference(shared, config, ref)
  step(f'(b3) seqlab extra biases kept (N(0, {BIAS_STD}^2)), reference without them',
       shared, ref)
  add_biases(ref, config)
  copy_into_reference(shared, config, ref)
  ours = step('(b4) + biases aligned (reference Linears given seqlab\'s biases)', shared, ref)
  # The floor: each in float32 against the reference in float64, and a shorter sequence.
  ref64 = copy.deepcopy(ref).double()
  theirs, theirs64 = reference_forward(ref, tokens), reference_forward(ref64, tokens)
  report['floor'] = {
      'seqlab fp32 vs reference fp64': diff(ours, theirs64),
      'reference fp32 vs reference fp64': diff(theirs, theirs64),
      f'seqlab vs reference, first {DECODE} tokens': diff(
          ours[:, :DECODE], reference_forward(ref, tokens[:, :DECODE]))}
  torch.manual_seed(SEED)
  ref_init = reference_of(config)
  set_gelu(ref_init, 'tanh')
  set_eps(ref_init, 1e-6)
  step('(b5) + init aligned: the reference\'s own init (torch seed 0) copied into seqlab',
       copy_from_reference(ref_init, config, init), ref_init)
  report['steps'] = steps

  # One-token decoding (the reference's recurrent path) against seqlab's full forward.
  decoded = reference_decode(ref, tokens[:, :DECODE])
  report['decode_max_abs_logit_diff'] = diff(decoded, ours[:, :DECODE])
  return report


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', help='also write the report as JSON here')
  args = parser.parse_args()
  torch.set_num_threads(2)
  versions = {'minGRU-pytorch': getattr(minGRU_pytorch, '__version__', None),
              'torch': torch.__version__, 'jax': jax.__version__}
  try:
    from importlib import metadata
    versions['minGRU-pytorch'] = metadata.version('minGRU-pytorch')
    versions['flax'] = metadata.version('flax')
  except Exception:  # pylint: disable=broad-except
    pass
  print(f'{datetime.date.today()}  {platform.processor() or platform.machine()}  '
        + '  '.join(f'{k} {v}' for k, v in versions.items()))
  print(f'tokens: {BATCH} x {LENGTH} uniform random of V = {VOCAB}, zero state, seed {SEED}')
  reports = []
  for name, group in model_groups():
    r = compare(name, group)
    reports.append(r)
    p = r['params']
    print(f'\n== {name}\nparameters: seqlab {p["seqlab"]:,}, reference {p["reference"]:,}, '
          f'difference {p["difference"]:,} (seqlab\'s extra biases: {p["seqlab extra biases"]:,})')
    print('init std (layer 0):  seqlab  reference  ratio')
    for group_name, (a, b, formula) in r['init_std'].items():
      ratio = f'{b / a:9.3f}' if a else '        -'
      print(f'  {group_name:15s} {a:8.4f} {b:9.4f} {ratio}   {formula}')
    a = r['at_init']
    print(f'at init: logit std seqlab {a["seqlab logit std"]:.4f}, reference '
          f'{a["reference logit std"]:.4f}; loss seqlab {a["seqlab loss"]:.4f}, reference '
          f'{a["reference loss"]:.4f} (ln V = {a["uniform loss ln V"]:.4f})')
    print('shared weights, max |logit difference| (max |logit|):')
    for s in r['steps']:
      print(f'  {s["max_abs_logit_diff"]:.3e} ({s["max_abs_logit"]:.2f})  {s["step"]}')
    print(f'  {r["decode_max_abs_logit_diff"]:.3e}  one-token decoding of {DECODE} tokens '
          f'(reference prev_hiddens path) vs seqlab\'s full forward, weights of (b4)')
    print('each function deviation alone (the other aligned), weights of (a):')
    for label, value in r['alone'].items():
      print(f'  {value:.3e}  {label}')
    print(f'the float32 floor at the weights of (b4), T = {LENGTH} unless said:')
    for label, value in r['floor'].items():
      print(f'  {value:.3e}  {label}')
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps({'versions': versions, 'reports': reports},
                                                 indent=1) + '\n', encoding='utf-8')


if __name__ == '__main__':
  main()
