"""How `seqlab.bench` runs a measurement: in a fresh worker process (`measure`); and the machine
it runs on (`machine`). The bench's own process builds and compiles no model.
"""

import json
import os
import platform
import subprocess
import sys


def measure(kind: str, **args) -> dict:
  """Runs one measurement (`seqlab.bench.worker`'s KINDS) in a fresh process and returns its
  JSON result; a RuntimeError with the last line of its stderr if it fails."""
  result = subprocess.run([sys.executable, '-m', 'seqlab.bench.worker', kind, json.dumps(args)],
                          capture_output=True, text=True, check=False)
  if result.returncode:
    tail = result.stderr.strip().splitlines()[-1:] or ['(no output)']
    killed = ' (killed by SIGKILL: out of memory?)' if result.returncode == -9 else ''
    raise RuntimeError(f'benchmark {kind} {args} failed with exit code {result.returncode}'
                       f'{killed}: {tail[0]}')
  return json.loads(result.stdout.strip().splitlines()[-1])


def machine() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  # The load average: on a shared machine, other work running at the same time slows every
  # measurement (the ceiling too); kept with the results, at the start and the end.
  return {'platform': device.platform, 'device': device.device_kind, 'cpu_count': os.cpu_count(),
          'processor': platform.processor() or platform.machine(), 'jax': jax.__version__,
          'python': platform.python_version(), 'load_average_start': list(os.getloadavg())}
