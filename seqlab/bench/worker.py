"""One benchmark measurement per process: `python -m seqlab.bench.worker KIND '{json args}'`.

`seqlab.bench` starts a fresh process for every measurement (`seqlab.bench.spawn`), so each
one's peak memory is its own and JAX and PyTorch never share threads. Prints one JSON line.

Kinds (`KINDS`): seqlab's and JAX's in `seqlab.bench.measures`: `matmul` (the matmul ceiling),
`bandwidth` (memory bandwidth), `train` (seqlab's train step, any model), `sample` (seqlab's
sampler); the PyTorch peers in `seqlab.bench.torch_peers`: `torch_train` (the LSTM rows' LSTM,
GRU or RNN and optimizer) and `torch_gpt_train` (a nanoGPT-style GPT: a model's `bench_peer`).
Timings are medians over timed repetitions after warm-up (`seqlab.bench.timing`).
"""

import json
import sys

if __name__ == '__main__' and (sys.argv[1:2] in (['train'], ['bandwidth']) or json.loads(
    sys.argv[2] if len(sys.argv) > 2 else '{}').get('malloc_tuning')):
  # seqlab trains as launch.py does (seqlab/host_memory.py); PyTorch with glibc's defaults,
  # or with the same settings when asked (`torch_train` with malloc_tuning=True).
  from seqlab import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.reuse_freed_memory()

# pylint: disable=g-import-not-at-top,wrong-import-position
from seqlab.bench import measures
from seqlab.bench import torch_peers

KINDS = {'matmul': measures.matmul, 'train': measures.train, 'torch_train': torch_peers.torch_train,
         'torch_gpt_train': torch_peers.torch_gpt_train, 'sample': measures.sample,
         'bandwidth': measures.bandwidth}

if __name__ == '__main__':
  kind, args = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
  print(json.dumps(KINDS[kind](**args)))
