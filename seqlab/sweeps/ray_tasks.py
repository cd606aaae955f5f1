"""`launch.py --sweep --executor ray`: a sweep's trials as Ray tasks, on a cluster or locally.

Each trial (or fused group) is one Ray task that runs the same command as the
local executor (`python -m seqlab.sweeps.trial --trial_json
SWEEP_DIR/trials/NAME.json --workdir SWEEP_DIR/NAME`) in a child process on
whichever node Ray places it, so the run directories, logs and sweep.json are
exactly those of a local sweep, and resume and failure handling are the local
executor's. A task asks for one GPU where the cluster has GPUs (Ray sets
CUDA_VISIBLE_DEVICES for it), else for one CPU.

Without `--address`, a local Ray instance is started on loopback with
`--parallel` CPUs (trials at once). With `--address HOST:PORT` (or `auto`) the
sweep joins a running cluster; every node must then see the repository, its
Python environment and the sweep directory at the same paths (a shared file
system), as is usual on clusters.

With `--early_stop`, trials judge themselves at their rungs through the sweep's
decision log (`seqlab.sweeps.halving`), which every node must see on the shared
file system with working `flock`; a trial let through after waiting at a rung
becomes a new task.

Stopping: SIGTERM/SIGINT/SIGHUP to the sweep writes SWEEP_DIR/.stop; each task
passes SIGTERM on to its trial (which checkpoints) and queued tasks do not
start. Ray is an optional dependency (requirements-ray.txt), imported here only.
"""

import os
import pathlib
import signal
import socket
import subprocess
import time

from seqlab import interrupts
from seqlab.errors import SeqlabError

STOP_FILENAME = '.stop'
REPO = pathlib.Path(__file__).resolve().parents[2]


def run_trial_command(command: list[str], log_path: str, cwd: str,
                      stop_path: str) -> tuple[int, str, float]:
  """Runs inside a Ray worker: (exit status, node, seconds) of the trial's command."""
  stop = pathlib.Path(stop_path)
  node = socket.gethostname()
  if stop.exists():  # the sweep was stopped before this task started
    return 128 + signal.SIGTERM, node, 0.0
  started = time.perf_counter()
  with open(log_path, 'a', encoding='utf-8') as log:
    log.write(f'[ray task on {node}, CUDA_VISIBLE_DEVICES='
              f'{os.environ.get("CUDA_VISIBLE_DEVICES", "")}]\n')
    log.flush()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,  # pylint: disable=consider-using-with
                               start_new_session=True)
    forwarded = False
    while process.poll() is None:
      if not forwarded and stop.exists():
        process.send_signal(signal.SIGTERM)  # the trial checkpoints and exits 143
        forwarded = True
      time.sleep(0.2)
  return process.returncode, node, time.perf_counter() - started


def _ray():
  try:
    import ray  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise SeqlabError('--executor ray needs Ray: pip install -r requirements-ray.txt') from None
  return ray


def run(sweep, tasks, stop: interrupts.StopRequest, address: str | None, parallel: int,
        finish, more=None) -> None:
  """Runs `tasks` (runner.Task) as Ray tasks; `finish(task, trial, exit_status, seconds,
  node)` records each trial when its task ends; `more(idle)` gives tasks to run next (trials
  let through at a rung: `runner.EarlyStopping`), `idle` when no task is in flight."""
  ray = _ray()
  stop_path = sweep.sweep_dir / STOP_FILENAME
  stop_path.unlink(missing_ok=True)
  # Workers import this module to run the task.
  runtime_env = {'env_vars': {'PYTHONPATH': str(REPO)}}
  # ray.init installs its own SIGTERM handler (which exits at once); the sweep's is put back.
  handlers = {s: signal.getsignal(s) for s in interrupts.STOP_SIGNALS}
  try:
    if address:
      ray.init(address=address, runtime_env=runtime_env, log_to_driver=False,
               logging_level='WARNING')
    else:
      ray.init(num_cpus=parallel, num_gpus=None, runtime_env=runtime_env, log_to_driver=False,
               include_dashboard=False, logging_level='WARNING',
               _node_ip_address='127.0.0.1')
  except (ConnectionError, RuntimeError, ValueError) as e:
    raise SeqlabError(f'could not start or reach Ray at {address or "a local instance"}: '
                      f'{str(e).splitlines()[0]}') from None
  for signum, handler in handlers.items():
    signal.signal(signum, handler)
  try:
    resources = ray.cluster_resources()
    per_task = {'num_gpus': 1, 'num_cpus': 0} if resources.get('GPU', 0) >= 1 else \
        {'num_cpus': 1}
    remote = ray.remote(run_trial_command).options(max_retries=0, **per_task)
    print(f'ray: {ray.get_runtime_context().gcs_address}, {resources.get("CPU", 0):g} CPUs, '
          f'{resources.get("GPU", 0):g} GPUs; each task asks for '
          f'{"1 GPU" if "num_gpus" in per_task else "1 CPU"}', flush=True)
    pending = {}

    def submit(task):
      log_path = sweep.sweep_dir / 'logs' / f'{task.name}.log'
      ref = remote.remote(task.command, str(log_path), str(REPO), str(stop_path))
      pending[ref] = task
      for trial in task.trials:
        sweep.record(trial.name, status='submitted', slot='ray', pid=None, log=task.name)

    for task in tasks:
      submit(task)
    while True:
      if stop.signum is not None and not stop_path.exists():
        stop_path.write_text(f'stopped by signal {stop.signum}\n')
      new = more(not pending) if more is not None and stop.signum is None else []
      for task in new:
        submit(task)
      if not pending:
        break
      done, _ = ray.wait(list(pending), num_returns=1, timeout=0.2)
      for ref in done:
        task = pending.pop(ref)
        try:
          returncode, node, seconds = ray.get(ref)
        except ray.exceptions.RayError as e:  # the worker or its node died
          with open(sweep.sweep_dir / 'logs' / f'{task.name}.log', 'a', encoding='utf-8') as log:
            log.write(f'error: ray task failed: {str(e).splitlines()[0]}\n')
          returncode, node, seconds = 1, '?', 0.0
        for trial in task.trials:
          finish(task, trial, returncode, seconds, f'ray:{node}')
  finally:
    ray.shutdown()
    stop_path.unlink(missing_ok=True)
