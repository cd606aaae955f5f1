"""seqlab.host_memory: after it, XLA:CPU's temporary buffers are reused, not faulted in anew."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

# A jitted function with a 64 MiB intermediate (4096 x 4096 fp32): XLA:CPU allocates it as a
# temporary buffer at every call. Page faults per call, averaged over windows of 5 calls; the
# fewest of 6 windows is reported (with the settings, the heap takes up to ~15 calls to grow
# to the size it then keeps).
_PROGRAM = '''
import json, resource, sys
from seqlab import host_memory
applied = host_memory.reuse_freed_memory()
import jax, jax.numpy as jnp
x, w = jnp.ones((4096, 1024)), jnp.ones((1024, 4096)) / 1024
w2 = jnp.ones((4096, 64)) / 4096
f = jax.jit(lambda x, w, w2: jnp.tanh(x @ w) @ w2)
windows = []
for _ in range(6):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(5):
    jax.block_until_ready(f(x, w, w2))
  windows.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
faults = min(windows)
print(json.dumps({'applied': applied, 'faults_per_call': faults}))
'''


def _run(tuning: str) -> dict:
  env = dict(os.environ, PYTHONPATH=str(ROOT), SEQLAB_MALLOC_TUNING=tuning, JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', _PROGRAM], env=env, capture_output=True,
                       text=True, timeout=300, check=True).stdout
  return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc only')
def test_temporary_buffers_are_reused_instead_of_faulted_in_at_every_call():
  default, tuned = _run('0'), _run('1')
  assert not default['applied'] and tuned['applied']
  # 64 MiB in 4 KiB pages is 16,384 faults: glibc's default maps the buffer anew every call.
  assert default['faults_per_call'] > 10_000
  assert tuned['faults_per_call'] < 1_000
