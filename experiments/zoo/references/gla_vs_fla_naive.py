"""seqlab's GLA operator against flash-linear-attention's `naive_recurrent_gla`, on shared inputs.

  python experiments/zoo/references/gla_vs_fla_naive.py [--out FILE.json]

Needs torch and fla-core in a virtualenv of its own, never the project's (PyTorch is a
reference peer here, not a dependency of seqlab); README.md beside this file has the commands,
the pinned reference (fla-core 0.5.2, the operators of flash-linear-attention 0.5.2) and the
measured numbers. `import fla` needs triton (a GPU package); the reference function's file,
`fla/ops/gla/naive.py`, imports only torch, so it is loaded from the installed package by path.

The operator, per head: S_t = diag(exp(gk_t)) S_{t-1} + k_t^T v_t, o_t = (q_t d_k^-0.5) S_t.
fla takes q, k, gk as B x T x H x K, v as B x T x H x V, the state as B x H x K x V, and scales
q by K^-0.5 itself; seqlab's operators (seqlab.models.gla.gla_recurrent, gla_chunked) take the
same layout and no scale (its layer scales q), so seqlab is given q * K^-0.5.

Printed, per case (float32 and float64; with and without an initial state; the 0.8M model's
head dims d_k 16, d_v 32, T = 100, not a multiple of any chunk size, and a small shape; gates as
the model makes them, logsigmoid(x) / 16, and strong ones, logsigmoid(3 x)): the max |o|, then
max |difference| of the outputs o and of the final state, and of the gradients of a fixed random
projection of (o, final state) with respect to q, k, v, gk and the initial state, for seqlab's
recurrent form and its chunked form at a few (chunk, sub-chunk) sizes, each against fla.

float64: `naive_recurrent_gla` casts its inputs to float32 (`.float()`) and makes its state in
float32, so on float64 tensors it computes in float32. Its float64 rows therefore call it on
tensors of a subclass whose `.float()` is `.double()` (fla's code runs unchanged; only its state
starts as a float32 zero, to which the initial state, drawn as float32 numbers, adds exactly, and
the first step's product promotes it to float64; so the gradient with respect to the initial
state passes that float32 buffer, and fla's dh0 is float64's rounded to float32 there). The same
call on plain float64 tensors (fla in float32) is printed beside it.

Exit status 1 if any difference is above its bound (float32: 2e-5 x max |o|, or 2e-5 x the
gradient's max; float64: 1e-11 x the same, but dh0's float32 bound, above): a checked script.
"""

import argparse
import datetime
import importlib.util
import json
import pathlib
import platform
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # `python experiments/zoo/references/...py` as well as `-m`
  sys.path.insert(0, str(ROOT))

# pylint: disable=wrong-import-position
import jax

jax.config.update('jax_enable_x64', True)  # float64 rows; the float32 rows stay float32
import jax.numpy as jnp
import numpy as np
import torch

from seqlab.models import gla

REFERENCE = 'fla/ops/gla/naive.py'
SEED = 0
CASES = [  # (name, B, T, H, K, V)
    ('0.8M heads (d_k 16, d_v 32)', 2, 100, 4, 16, 32),
    ('small (d_k 4, d_v 8)', 2, 13, 2, 4, 8),
]
GATES = {'model (logsigmoid(x) / 16)': lambda x: torch.nn.functional.logsigmoid(x) / 16,
         'strong (logsigmoid(3 x))': lambda x: torch.nn.functional.logsigmoid(3 * x)}
CHUNKED = ((16, 4), (64, 16), (5, 3))  # (chunk_size, sub_chunk_size)
BOUND = {'float32': 2e-5, 'float64': 1e-11}


def load_reference():
  """fla's naive.py from the installed fla-core, by path (`import fla` needs triton)."""
  spec = importlib.util.find_spec('fla')
  if spec is None or not spec.submodule_search_locations:
    sys.exit('fla is not installed: pip install --no-deps fla-core==0.5.2 (README.md)')
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / 'ops' / 'gla' / 'naive.py'
  module_spec = importlib.util.spec_from_file_location('fla_gla_naive', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.naive_recurrent_gla, path


class Float64(torch.Tensor):
  """A tensor whose `.float()` keeps float64 (so that fla's naive code runs in float64)."""

  def float(self, *args, **kwargs):  # pylint: disable=invalid-overridden-method
    del args, kwargs
    return self.double()


def draw(B, T, H, K, V, gate, initial, generator):
  """Shared inputs in float64 (every number a float32 number, so float32 copies are exact)."""
  r = lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float32).double()
  q, k, v = r(B, T, H, K), r(B, T, H, K), r(B, T, H, V)
  gk = gate(r(B, T, H, K)).float().double()
  h0 = r(B, H, K, V) if initial else None
  # the projection that makes a scalar loss of (o, final state)
  w_o, w_h = r(B, T, H, V), r(B, H, K, V)
  return (q, k, v, gk, h0), (w_o, w_h)


def reference_grads(naive, inputs, weights, dtype, float64_subclass):
  """fla's o, final state and the gradients of sum(o w_o) + sum(h w_h) w.r.t. the inputs."""
  tensors = []
  for x in inputs:
    if x is None:
      tensors.append(None)
      continue
    x = x.to(dtype).clone()
    if float64_subclass:
      x = x.as_subclass(Float64)
    tensors.append(x.requires_grad_())
  q, k, v, gk, h0 = tensors
  o, h = naive(q, k, v, gk, initial_state=h0, output_final_state=True)
  loss = (o * weights[0].to(o.dtype)).sum() + (h * weights[1].to(h.dtype)).sum()
  grads = torch.autograd.grad(loss, [t for t in tensors if t is not None])
  as_np = lambda t: t.detach().as_subclass(torch.Tensor).double().numpy()
  return as_np(o), as_np(h), [as_np(g) for g in grads], str(o.dtype), str(h.dtype)


def seqlab_grads(form, inputs, weights, dtype):
  """seqlab's o, final state and the same gradients (q given scaled by K^-0.5)."""
  q, k, v, gk, h0 = (None if x is None else jnp.asarray(x.numpy(), dtype) for x in inputs)
  w_o, w_h = (jnp.asarray(w.numpy(), dtype) for w in weights)
  B, _, H, K = q.shape
  initial = h0 is not None
  h0 = h0 if initial else jnp.zeros((B, H, K, v.shape[-1]), dtype)

  def loss(q, k, v, gk, h0):
    o, h = form(q * K ** -0.5, k, v, gk, h0)
    return jnp.sum(o * w_o) + jnp.sum(h * w_h), (o, h)
  argnums = (0, 1, 2, 3, 4) if initial else (0, 1, 2, 3)
  (_, (o, h)), grads = jax.jit(jax.value_and_grad(loss, argnums, has_aux=True))(q, k, v, gk, h0)
  return (np.asarray(o, np.float64), np.asarray(h, np.float64),
          [np.asarray(g, np.float64) for g in grads], str(o.dtype))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', help='also write the numbers as JSON to this file')
  args = parser.parse_args()
  naive, path = load_reference()
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  versions = {name: metadata.version(name) for name in ('fla-core', 'torch', 'jax', 'flax')}
  try:
    versions['flash-linear-attention'] = metadata.version('flash-linear-attention')
  except metadata.PackageNotFoundError:
    pass
  print(f'{datetime.date.today()}  {platform.machine()}  {platform.processor() or ""}  '
        + '  '.join(f'{k} {v}' for k, v in versions.items()))
  print(f'reference: {path} (naive_recurrent_gla)')
  forms = {'recurrent': gla.gla_recurrent}
  for chunk, sub in CHUNKED:
    forms[f'chunked {chunk}/{sub}'] = (
        lambda q, k, v, g, h, chunk=chunk, sub=sub: gla.gla_chunked(q, k, v, g, h, chunk, sub))
  names = ['q', 'k', 'v', 'gk', 'h0']
  results, failures = [], []
  for case, B, T, H, K, V in CASES:
    for gate_name, gate in GATES.items():
      for initial in (False, True):
        generator = torch.Generator().manual_seed(SEED)
        inputs, weights = draw(B, T, H, K, V, gate, initial, generator)
        for dtype in ('float32', 'float64'):
          torch_dtype = getattr(torch, dtype)
          ref = reference_grads(naive, inputs, weights, torch_dtype, dtype == 'float64')
          o_ref, h_ref, g_ref, o_dtype, h_dtype = ref
          title = (f'{case}, B {B} T {T} H {H}; gates {gate_name}; '
                   f'{"initial state" if initial else "zero state"}; {dtype} '
                   f'(fla computed in {o_dtype.replace("torch.", "")})')
          print(f'\n== {title}')
          print(f'   max |o| {np.abs(o_ref).max():.3g}, max |final state| {np.abs(h_ref).max():.3g}, '
                f'min gk {inputs[3].min().item():.3g}')
          print(f'   {"seqlab form":<16} {"o":>9} {"state":>9} ' +
                ' '.join(f'{"d" + n:>9}' for n in names[:len(g_ref)]))
          if dtype == 'float64':  # fla on plain float64 tensors: it computes in float32
            o32, h32, g32, _, _ = reference_grads(naive, inputs, weights, torch_dtype, False)
            row = [np.abs(o32 - o_ref).max(), np.abs(h32 - h_ref).max(),
                   *[np.abs(a - b).max() for a, b in zip(g32, g_ref)]]
            print(f'   {"(fla float32)":<16} ' + ' '.join(f'{x:9.2e}' for x in row))
          for form_name, form in forms.items():
            o, h, grads, out_dtype = seqlab_grads(form, inputs, weights, dtype)
            assert out_dtype == dtype, (out_dtype, dtype)
            diffs = {'o': np.abs(o - o_ref).max(), 'state': np.abs(h - h_ref).max(),
                     **{f'd{n}': np.abs(a - b).max() for n, a, b in zip(names, grads, g_ref)}}
            scales = {'o': np.abs(o_ref).max(), 'state': np.abs(h_ref).max(),
                      **{f'd{n}': np.abs(b).max() for n, b in zip(names, g_ref)}}
            # fla's float64 rows keep its state's first buffer in float32: dh0 is float32's
            bound = lambda key: BOUND['float32' if key == 'dh0' else dtype]
            bad = [key for key in diffs if diffs[key] > bound(key) * max(scales[key], 1.0)]
            print(f'   {form_name:<16} ' + ' '.join(f'{x:9.2e}' for x in diffs.values())
                  + (f'   ABOVE BOUND: {", ".join(bad)}' if bad else ''))
            results.append({'case': case, 'gates': gate_name, 'initial_state': initial,
                            'dtype': dtype, 'form': form_name,
                            **{k: float(x) for k, x in diffs.items()},
                            **{f'max_{k}': float(x) for k, x in scales.items()}})
            failures += [f'{title}: {form_name} {key}' for key in bad]
  worst = {}
  for r in results:
    key = (r['dtype'], r['form'])
    worst[key] = max(worst.get(key, 0.0), r['o'], r['state'])
  print('\nworst max |difference| of o and final state over every case:')
  for (dtype, form), value in sorted(worst.items()):
    print(f'   {dtype}  {form:<16} {value:.2e}')
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(
        {'versions': versions, 'reference': str(path), 'results': results}, indent=1))
  if failures:
    print('\nFAILED (above the bound):\n  ' + '\n  '.join(failures))
    sys.exit(1)
  print(f'\nall within bounds (float32: {BOUND["float32"]:g}, float64: {BOUND["float64"]:g}, '
        'relative to the largest value, at least 1)')


if __name__ == '__main__':
  main()
