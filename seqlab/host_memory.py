"""glibc malloc settings under which XLA:CPU reuses its temporary buffers from step to step.

XLA:CPU allocates the temporary buffer of every execution with `malloc` and frees
it at the end. glibc serves large requests with a fresh `mmap` (from a worker
thread's arena, any request over 64 MiB, whatever the settings) and unmaps it on
`free`, so every train step faults its whole temporary buffer in again, page by
page: for shape M split over two CPU devices, 63k page faults and 126 ms of kernel
time in a 360 ms step. With one malloc arena, no `mmap` and no trimming of the
heap, freed buffers stay in the process and the next step reuses them (M: no page
faults, 291 ms per step). "No trimming" is M_TRIM_THRESHOLD -1: the largest positive
value (2 GiB) still hands a freed buffer over 2 GiB back to the kernel (Mamba 5M's step:
2.6 s instead of 1.3). The cost: the process keeps its peak heap until it exits.

The settings only hold for threads that start after them, so `launch.py` calls
`reuse_freed_memory()` before importing numpy or JAX. Only training uses them: with
one arena, XLA's multi-threaded compilation takes about 25% longer (S: 1.0 -> 1.3 s),
and sampling, which allocates little, gains nothing. `SEQLAB_MALLOC_TUNING=0`
leaves glibc's defaults.
"""

import ctypes
import os
import sys

# mallopt parameters (glibc <malloc.h>).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# -1: never trim (mallopt(3)). The largest positive value, 2**31 - 1, still trims a freed
# buffer over 2 GiB at the heap's top (Mamba 5M's step on this CPU), faulting it in anew each step.
_NEVER_TRIM = -1


def reuse_freed_memory() -> bool:
  """Applies the settings; False where they do not apply (not glibc) or are turned off."""
  if os.environ.get('SEQLAB_MALLOC_TUNING', '1') == '0' or not sys.platform.startswith('linux'):
    return False
  try:
    mallopt = ctypes.CDLL('libc.so.6').mallopt
  except (OSError, AttributeError):  # another C library (musl, ...)
    return False
  mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
  return all(mallopt(param, value) == 1 for param, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM)))
