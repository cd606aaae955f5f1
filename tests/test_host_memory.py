"""seqlab.host_memory: after it, XLA:CPU's temporary buffers are reused, not faulted in anew."""

import json
import sys

import pytest

from conftest import start_command

# A jitted function with a 64 MiB intermediate (4096 x 4096 fp32; a product of rank 16, cheap
# to compute): XLA:CPU allocates it as a temporary buffer at every call. Page faults per call,
# averaged over windows of 5 calls; the fewest of 6 windows is reported (with the settings, the
# heap takes up to ~15 calls to grow to the size it then keeps). The settings must be applied
# before JAX starts its threads, hence a fresh interpreter.
_PROGRAM = '''
import json, resource, sys
from seqlab import host_memory
applied = host_memory.reuse_freed_memory()
import jax, jax.numpy as jnp
x, w = jnp.ones((4096, 16)), jnp.ones((16, 4096)) / 16
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


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc only')
def test_temporary_buffers_are_reused_instead_of_faulted_in_at_every_call():
  # glibc's defaults and the settings, side by side (~2 s each, mostly importing JAX).
  processes = [start_command(code=_PROGRAM, env={'SEQLAB_MALLOC_TUNING': tuning,
                                                 'JAX_PLATFORMS': 'cpu'})
               for tuning in ('0', '1')]
  outputs = [process.communicate(timeout=300) for process in processes]
  for process, (_, err) in zip(processes, outputs):
    assert process.returncode == 0, err
  default, tuned = (json.loads(out.strip().splitlines()[-1]) for out, _ in outputs)
  assert not default['applied'] and tuned['applied']
  # 64 MiB in 4 KiB pages is 16,384 faults: glibc's default maps the buffer anew every call.
  assert default['faults_per_call'] > 10_000
  assert tuned['faults_per_call'] < 1_000


# A 3 GiB buffer malloc'ed, written and freed three times from the main thread, through glibc
# itself: the page faults of each round. Over 2 GiB, the largest trim threshold a positive int
# names, the freed buffer sits at the heap's top: unless trimming is off, free() returns it to
# the kernel and the next round faults all 786k pages in again (Mamba 5M's train step did).
_LARGE_BUFFER_PROGRAM = '''
import ctypes, json, resource
from seqlab import host_memory
applied = host_memory.reuse_freed_memory()
libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
size, faults = 3 << 30, []
for _ in range(3):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  buffer = libc.malloc(size)
  assert buffer, 'malloc failed'
  libc.memset(buffer, 1, size)
  libc.free(buffer)
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({'applied': applied, 'faults': faults}))
'''


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc only')
def test_a_freed_buffer_over_2_gib_is_kept_for_the_next_step_too():
  outputs = {}
  for tuning in ('0', '1'):  # one at a time: 3 GiB each
    process = start_command(code=_LARGE_BUFFER_PROGRAM, env={'SEQLAB_MALLOC_TUNING': tuning})
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    outputs[tuning] = json.loads(out.strip().splitlines()[-1])
  pages = (3 << 30) // 4096
  assert not outputs['0']['applied'] and outputs['1']['applied']
  assert all(f > pages * 0.9 for f in outputs['0']['faults'])  # glibc's default: mmap, munmap
  first, *later = outputs['1']['faults']
  assert first > pages * 0.9 and all(f < 1_000 for f in later)
