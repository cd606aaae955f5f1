"""Batches assembled ahead of the training loop, in a background thread.

`Prefetcher(make_batch, start, stop)` calls `make_batch(step)` for start,
start + 1, ... (gathering the windows from the memory-mapped corpus and
putting them on the devices) up to `depth` steps ahead, so the loop finds each
batch ready on the device. `wait_seconds` is the time the loop waited for its
batches: the only data-loading cost the training step sees.
"""

import queue
import threading
import time


class Prefetcher:

  def __init__(self, make_batch, start: int, stop: int, depth: int = 2):
    self._make_batch, self._stop_step = make_batch, stop
    self._queue = queue.Queue(maxsize=depth)
    self._closing = threading.Event()
    self._next = start
    self.wait_seconds = 0.0
    self._thread = threading.Thread(target=self._produce, args=(start,), daemon=True,
                                    name='seqlab-prefetch')
    self._thread.start()

  def _produce(self, step: int) -> None:
    while step < self._stop_step and not self._closing.is_set():
      try:
        item = (step, self._make_batch(step), None)
      except Exception as e:  # pylint: disable=broad-exception-caught
        item = (step, None, e)  # raised in the loop's thread, by get()
      while not self._closing.is_set():
        try:
          self._queue.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if item[2] is not None:
        return
      step += 1

  def get(self, step: int):
    """The batch of `step` (steps must be asked for in order, from `start`)."""
    if step != self._next:
      raise ValueError(f'asked for the batch of step {step}, expected {self._next}')
    began = time.perf_counter()
    got_step, batch, error = self._queue.get()
    self.wait_seconds += time.perf_counter() - began
    if error is not None:
      raise error
    assert got_step == step, (got_step, step)
    self._next += 1
    return batch

  def close(self) -> None:
    self._closing.set()
    while self._thread.is_alive():
      try:
        self._queue.get_nowait()
      except queue.Empty:
        pass
      self._thread.join(timeout=0.05)
