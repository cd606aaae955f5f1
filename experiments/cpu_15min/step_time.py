"""Times the jitted train step of candidate models: median ms/step after warm-up.

  python -m experiments.cpu_15min.step_time "layers=2,hidden=256,batch=64" "cell=gru,hidden=320"

Each argument is one candidate (defaults: lstm, 2 layers, 256 units, batch 32, seq 64).
Also prints GFLOP/s (6 x parameters x chars/s) and, for scale, a 2048^3 float32 matmul's.
A stopgap for this study; a full benchmark command is future work (issue 5).
"""

import statistics
import sys
import time

import jax
import numpy as np

from configs import shakespeare
from seqlab.models import char_rnn as model_lib
from seqlab import optim
from seqlab import steps


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
  a = jax.numpy.ones((n, n), jax.numpy.float32)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  start = time.perf_counter()
  for _ in range(repeats):
    out = matmul(a)
  out.block_until_ready()
  return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def time_step(cell='lstm', layers=2, hidden=256, batch=32, seq=64,
              repeats=20) -> tuple[float, int]:
  config = shakespeare.get_config('cpu')
  config.model.cell, config.model.num_layers, config.model.hidden_size = cell, layers, hidden
  model_config = model_lib.ModelConfig.from_config(config.model, vocab_size=65)
  schedule = optim.make_schedule(config.optim, 1000, 100)
  optimizer = optim.make_optimizer(config.optim, schedule)
  state = steps.init_state(model_config, optimizer, batch, 0)
  train_step = jax.jit(steps.make_train_step(model_lib.CharLM(model_config), optimizer, schedule),
                       donate_argnums=0)
  tokens = np.random.default_rng(0).integers(0, 65, (batch, seq)).astype(np.int32)
  for _ in range(3):  # compile and warm up
    state, metrics = train_step(state, tokens, tokens, False)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state, metrics = train_step(state, tokens, tokens, False)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return statistics.median(times), model_lib.count_params(state.params)


if __name__ == '__main__':
  print(f'2048^3 float32 matmul: {matmul_gflops():.0f} GFLOP/s')
  for arg in sys.argv[1:] or ['']:
    kwargs = dict(kv.split('=') for kv in arg.split(',') if kv)
    kwargs = {k: v if k == 'cell' else int(v) for k, v in kwargs.items()}
    seconds, num_params = time_step(**kwargs)
    chars = kwargs.get('batch', 32) * kwargs.get('seq', 64)
    print(f'{arg or "default"}: {seconds * 1e3:.1f} ms/step, {chars / seconds / 1e3:.1f}k chars/s, '
          f'{6 * num_params * chars / seconds / 1e9:.0f} GFLOP/s')
