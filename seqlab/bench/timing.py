"""What every bench measurement shares: the task and how it is timed and weighed.

The task: random tokens of tiny Shakespeare's 65 symbols, trained with Adam and global-norm
clipping 5 (seqlab and its PyTorch peers alike). Timings are medians over timed repetitions
after warm-up; the measured function ends each one on the finished result (JAX's
`block_until_ready`, PyTorch's `loss.item()`), so that asynchronous dispatch is not mistaken
for speed. Imports nothing heavy.
"""

import resource
import statistics
import time

VOCAB = 65  # tiny Shakespeare's vocabulary
CLIP = 5.0
LEARNING_RATE = 2e-3


def median_time(fn, repeats: int) -> float:
  """The median seconds of `repeats` calls of `fn` (which waits for its own result)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
