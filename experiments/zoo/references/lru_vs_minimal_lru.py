"""seqlab's LRU against the authors' JAX reference, NicolasZucchet/minimal-LRU, on shared weights.

  git --git-dir=MIRROR show bbd71b1104c399ec0d13819527d791949e66f599:lru/model.py \
      > /tmp/minimal_lru_model.py
  python experiments/zoo/references/lru_vs_minimal_lru.py --reference /tmp/minimal_lru_model.py \
      [--out FILE.json]

The reference's `lru/model.py` needs only jax and flax (the project's own), so it runs in the
project's virtualenv; it is read from a file given on the command line (a copy of the pinned
commit's file; never committed here, nothing is downloaded). README.md beside this file has the
pin, the command and the measured numbers.

The same function as seqlab's LRU (dropout 0): the reference's StackedEncoderModel(lru=
partial(LRU, d_hidden=N, d_model=H, r_min, r_max, max_phase), d_model=H, n_layers=L,
norm='layer', prenorm=True, training=False) on one-hot tokens (its `encoder` Dense on a one-hot
input is seqlab's row lookup plus bias), applied to each sequence (vmap over the batch, as its
BatchClassificationModel), then seqlab's final LayerNorm and decoder, which the reference does
not have (its ClassificationModel's decoder reads the stream unnormalised). Parameter trees are
the same names (encoder, layers_i/{normalization, seq, out1, out2}); seqlab's extra 'norm' and
'decoder' are left out of the reference's.

Printed, for each size (the 0.8M variant of configs/zoo.py:lru, and a small 2 x 32, state 24):
  * parameter counts (seqlab against the reference's ClassificationModel with a V-way decoder),
  * max |difference| from the zero state over B x T random tokens, shared weights (seqlab's
    init with every bias, LayerNorm scale and gamma_log moved by N(0, 0.1^2), so that none is
    at its initial value): the residual stream after the last layer, the logits (the
    reference's stream through seqlab's head), and each LRU layer alone on a random input;
    for both of seqlab's scan forms;
  * the float32 floor: each against the reference in float64 (jax x64, weights cast);
  * the initialisation, both drawn at the same ring (8,192 units): |lambda|^2, phase and gamma
    statistics, the stds of B, C, D and the Dense kernels, and the Kolmogorov-Smirnov distance
    between the two samples of |lambda|^2 and of the phase.
seqlab is used through seqlab.models.registry (config_of, group_of, init_params, module_of,
init_carry, count_params), the parameter names of seqlab/models/lru.py and its LRU layer.
"""

import argparse
import dataclasses
import datetime
import functools
import importlib.util
import json
import pathlib
import platform
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # `python experiments/zoo/references/...py` as well as `-m`
  sys.path.insert(0, str(ROOT))

# pylint: disable=wrong-import-position
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seqlab.models import lru as seqlab_lru
from seqlab.models import registry

PIN = 'bbd71b1104c399ec0d13819527d791949e66f599'
VOCAB = 65  # tiny Shakespeare's characters
BATCH, LENGTH = 4, 256
NOISE = 0.1  # the shared weights' biases, scale offsets and gamma_log offsets
INIT_UNITS = 8192
SEED = 0


def load_reference(path: str):
  spec = importlib.util.spec_from_file_location('minimal_lru_model', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def configs():
  zoo = registry.config_of(registry.group_of('lru', '0.8M'), VOCAB)
  return [('lru 0.8M (configs/zoo.py:lru)', zoo),
          ('lru small (2 x 32, state 24)', dataclasses.replace(zoo, num_layers=2, width=32,
                                                                state=24))]


def shared_weights(config, seed):
  """seqlab's init with every bias ~ N(0, NOISE^2), every LayerNorm scale 1 + N(0, NOISE^2) and
  gamma_log + N(0, NOISE^2) (at init they are 0, 1 and log sqrt(1 - |lambda|^2))."""
  rng = np.random.default_rng(seed)

  def leaf(path, x):
    name = path[-1].key
    if name == 'bias':
      return jnp.asarray(rng.normal(0, NOISE, x.shape), jnp.float32)
    if name == 'scale':
      return jnp.asarray(1 + rng.normal(0, NOISE, x.shape), jnp.float32)
    if name == 'gamma_log':
      return jnp.asarray(x + rng.normal(0, NOISE, x.shape), jnp.float32)
    return x
  return jax.tree_util.tree_map_with_path(leaf, registry.init_params(config, seed))


def reference_models(ref, config):
  lru = functools.partial(ref.LRU, d_hidden=config.n, d_model=config.width, r_min=config.r_min,
                          r_max=config.r_max, max_phase=config.max_phase)
  stack = ref.StackedEncoderModel(lru=lru, d_model=config.width, n_layers=config.num_layers,
                                  dropout=0.0, training=False, norm='layer', prenorm=True)
  classifier = ref.ClassificationModel(lru=lru, d_output=config.vocab_size, d_model=config.width,
                                       n_layers=config.num_layers, dropout=0.0, training=False,
                                       pooling='none', norm='layer', prenorm=True)
  return lru, stack, classifier


def head(params, stream):
  """seqlab's final LayerNorm and decoder (not in the reference's stack)."""
  x = nn.LayerNorm().apply({'params': params['norm']}, stream)
  return nn.Dense(params['decoder']['kernel'].shape[1]).apply({'params': params['decoder']}, x)


def max_diff(a, b) -> float:
  return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def compare(ref, name, config) -> dict:
  params = shared_weights(config, SEED)
  ref_params = {k: v for k, v in params.items() if k not in ('norm', 'decoder')}
  _, stack, _ = reference_models(ref, config)
  assert jax.tree.structure(ref_params) == jax.tree.structure(
      jax.eval_shape(stack.init, jax.random.PRNGKey(0), jnp.zeros((1, VOCAB)))['params'])
  rng = np.random.default_rng(SEED + 1)
  tokens = jnp.asarray(rng.integers(0, VOCAB, (BATCH, LENGTH)), jnp.int32)
  u = jnp.asarray(rng.normal(size=(BATCH, LENGTH, config.width)), jnp.float32)
  L = config.num_layers

  def seqlab_forward(scan):
    cfg = dataclasses.replace(config, scan=scan)
    module = registry.module_of(cfg)
    (logits, _), state = jax.jit(lambda p, t: module.apply(
        {'params': p}, t, registry.init_carry(cfg, BATCH), capture_intermediates=True,
        mutable=['intermediates']))(params, tokens)
    stream = state['intermediates'][f'layers_{L - 1}']['__call__'][0][0]
    lru_layer = seqlab_lru.LRU(cfg)  # the LRU layer alone
    zero = registry.init_carry(cfg, BATCH)[0]
    y = jax.jit(lambda p, u: lru_layer.apply({'params': p}, u, zero)[0])(
        params['layers_0']['seq'], u)
    return {'logits': np.asarray(logits), 'stream': np.asarray(stream), 'lru': np.asarray(y)}

  def reference_forward(dtype):
    cast = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)
    lru_ref = reference_models(ref, config)[0]()
    stream = jax.jit(jax.vmap(lambda p, x: stack.apply({'params': p}, x), in_axes=(None, 0)))(
        cast(ref_params), jax.nn.one_hot(tokens, VOCAB, dtype=dtype))
    y = jax.jit(jax.vmap(lambda p, x: lru_ref.apply({'params': p}, x), in_axes=(None, 0)))(
        cast(params['layers_0']['seq']), jnp.asarray(u, dtype))
    logits = head(cast(params), stream)
    return {'logits': np.asarray(logits), 'stream': np.asarray(stream), 'lru': np.asarray(y)}

  ours = {scan: seqlab_forward(scan) for scan in ('sequential', 'associative')}
  theirs = reference_forward(jnp.float32)
  with jax.enable_x64(True):
    theirs64 = reference_forward(jnp.float64)
  report = {'name': name, 'config': dataclasses.asdict(config),
            'scale': {k: float(np.abs(theirs64[k]).max()) for k in theirs64}}
  for scan, out in ours.items():
    report[f'seqlab {scan} vs reference fp32'] = {k: max_diff(out[k], theirs[k]) for k in out}
    report[f'seqlab {scan} vs reference fp64'] = {k: max_diff(out[k], theirs64[k]) for k in out}
  report['reference fp32 vs reference fp64'] = {k: max_diff(theirs[k], theirs64[k])
                                                for k in theirs}
  for label, other in (('fp32', theirs), ('fp64', theirs64)):
    report[f'first 32 tokens, seqlab sequential vs reference {label}'] = {
        k: max_diff(ours['sequential'][k][:, :32], other[k][:, :32]) for k in other}
  return report


def init_statistics(ref, config) -> dict:
  """Both initialisations at the config's ring, INIT_UNITS units, and their parameter counts."""
  big = dataclasses.replace(config, state=INIT_UNITS)
  lru_ref = reference_models(ref, big)[0]
  classifier = reference_models(ref, config)[2]
  u = jnp.zeros((1, config.width))
  theirs = jax.device_get(jax.jit(lambda k: lru_ref().init(k, u))(jax.random.PRNGKey(SEED)))
  ours = jax.device_get(registry.init_params(big, SEED))['layers_0']['seq']
  theirs = theirs['params']

  def stats(p):
    radius2 = np.exp(-2 * np.exp(np.asarray(p['nu_log'], np.float64)))
    phase = np.exp(np.asarray(p['theta_log'], np.float64))
    gamma = np.exp(np.asarray(p['gamma_log'], np.float64))
    return {'|lambda|^2 min': radius2.min(), '|lambda|^2 mean': radius2.mean(),
            '|lambda|^2 max': radius2.max(), 'phase min': phase.min(), 'phase mean': phase.mean(),
            'phase max': phase.max(),
            'max |gamma - sqrt(1 - |lambda|^2)|': np.abs(gamma - np.sqrt(1 - radius2)).max(),
            'std B_re': np.std(p['B_re']), 'std B_im': np.std(p['B_im']),
            'std C_re': np.std(p['C_re']), 'std C_im': np.std(p['C_im']), 'std D': np.std(p['D'])}

  def ks(a, b):
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return float(np.abs(np.searchsorted(a, grid, 'right') / a.size -
                        np.searchsorted(b, grid, 'right') / b.size).max())

  radius2 = lambda p: np.exp(-2 * np.exp(np.asarray(p['nu_log'], np.float64)))
  phase = lambda p: np.exp(np.asarray(p['theta_log'], np.float64))
  full_ours = jax.eval_shape(lambda: registry.init_params(config, SEED))
  full_theirs = jax.eval_shape(classifier.init, jax.random.PRNGKey(SEED),
                               jnp.zeros((1, VOCAB)))['params']
  H, N = config.width, INIT_UNITS
  expected = {'|lambda|^2 mean': (config.r_min ** 2 + config.r_max ** 2) / 2,
              'phase mean': config.max_phase / 2, 'std B_re': 1 / np.sqrt(2 * H),
              'std B_im': 1 / np.sqrt(2 * H), 'std C_re': 1 / np.sqrt(N),
              'std C_im': 1 / np.sqrt(N), 'std D': 1.0}
  return {'seqlab': {k: float(v) for k, v in stats(ours).items()},
          'reference': {k: float(v) for k, v in stats(theirs).items()},
          'formula': expected,
          'ks |lambda|^2': ks(radius2(ours), radius2(theirs)),
          'ks phase': ks(phase(ours), phase(theirs)),
          'params seqlab': registry.count_params(full_ours),
          'params reference': registry.count_params(full_theirs)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--reference', required=True,
                      help=f'a copy of minimal-LRU\'s lru/model.py at commit {PIN}')
  parser.add_argument('--out', help='also write the report as JSON here')
  args = parser.parse_args()
  ref = load_reference(args.reference)
  versions = {'date': str(datetime.date.today()), 'machine': platform.machine(),
              'jax': jax.__version__, 'flax': flax.__version__, 'reference': PIN}
  print('  '.join(f'{k} {v}' for k, v in versions.items()))
  print(f'tokens: {BATCH} x {LENGTH} uniform random of V = {VOCAB}, zero state, seed {SEED}; '
        f'LRU layer alone: N(0, 1) inputs of the same shape')
  reports = []
  for name, config in configs():
    report = compare(ref, name, config)
    report['init'] = init_statistics(ref, config)
    reports.append(report)
    init = report['init']
    print(f'\n== {name}: {registry.describe(config)}')
    print(f'parameters: seqlab {init["params seqlab"]:,}, reference (ClassificationModel, '
          f'V-way decoder) {init["params reference"]:,}, difference '
          f'{init["params seqlab"] - init["params reference"]:,} (seqlab\'s final LayerNorm: '
          f'{2 * config.width})')
    print('max |difference|          stream   logits   LRU layer 0 alone')
    print('  (max |value|)           ' + '  '.join(f'{report["scale"][k]:7.3g}'
                                                   for k in ('stream', 'logits', 'lru')))
    for key, values in report.items():
      if ' vs ' in key:
        print(f'  {key}: ' + '  '.join(f'{values[k]:.2e}' for k in ('stream', 'logits', 'lru')))
    print(f'init at r in [{config.r_min}, {config.r_max}], phase in [0, {config.max_phase}], '
          f'{INIT_UNITS} units:     seqlab  reference  formula')
    for key in init['seqlab']:
      formula = init['formula'].get(key)
      print(f'  {key:36s} {init["seqlab"][key]:10.4g} {init["reference"][key]:10.4g}'
            + (f' {formula:10.4g}' if formula is not None else ''))
    print(f'  Kolmogorov-Smirnov distance seqlab vs reference: |lambda|^2 '
          f'{init["ks |lambda|^2"]:.4f}, phase {init["ks phase"]:.4f} (p = 0.01 at '
          f'{1.63 * np.sqrt(2 / INIT_UNITS):.4f})')
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps({'versions': versions, 'reports': reports},
                                                 indent=1, default=float))


if __name__ == '__main__':
  main()
