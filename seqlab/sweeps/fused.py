"""Fused trials: sweep trials that share array shapes, trained in one compiled step.

Trials that differ only in values that change no shape (FUSABLE: seed, learning
rate, dropout, Adam's b1/b2, weight decay, the clipping threshold) are stacked
on a leading trial axis -- parameters, optimizer state, carried state, batches --
and one jitted step `jax.vmap`s the ordinary train step (`seqlab.steps`) over it,
with each trial's values passed in as traced scalars. Each trial keeps its own
run directory, written by its own `RunRecorder`, so it reads (and resumes, alone
or fused) like any run. Trials that differ in anything else go to separate groups.

Two things differ from a trial trained alone: the learning rate is applied as
`lr * schedule(step; lr=1)` (schedules are linear in it) and matmuls are batched
over trials, so losses agree to float tolerance, not bit for bit; and after a
NaN a fused trial stops (it cannot roll back alone while the others go on).

With early stopping (`seqlab.sweeps.halving`), the group stops at each rung,
reports its trials together and goes on with those that continue, its step
compiled again for fewer trials (`_run_in_rungs`).
"""

import contextlib
import json
import sys
import time

import jax
import numpy as np

from seqlab.run import checkpoint
from seqlab import interrupts
from seqlab.run import metrics_writer
from seqlab.models import registry
from seqlab import optim
from seqlab.run import recorder as recorder_lib
from seqlab import loop
from seqlab.run import lock as run_lock
from seqlab.run import write_failures
from seqlab import steps
from seqlab import train
from seqlab.errors import SeqlabError

TRIAL_AXIS = 'trials'
# Config keys that may differ between the trials of one fused group.
FUSABLE = ('seed', 'model.dropout', 'optim.learning_rate',
           *(f'optim.{name}' for name in optim.NUMERIC_FIELDS))


def group_key(config, workdir) -> str:
  """Trials with equal keys can be fused: same shapes, same program, same starting step."""
  flat = metrics_writer.flatten_config(json.loads(config.to_json_best_effort()))
  for key in FUSABLE:
    flat.pop(key, None)
  flat['clipping'] = config.optim.grad_clip > 0  # whether to clip is part of the program
  flat['start_step'] = checkpoint.latest_step_on_disk(workdir) or 0
  return json.dumps(flat, sort_keys=True, default=str)


def group(trials_and_dirs: list) -> list[list]:
  """Groups of fusable (trial, run dir) pairs, in the order of their first trial."""
  groups = {}
  for trial, workdir in trials_and_dirs:
    groups.setdefault(group_key(trial.config, workdir), []).append((trial, workdir))
  return list(groups.values())


def trial_values(config) -> dict:
  """The fusable numbers of one trial (the seed aside: it picks initial state and data)."""
  return {'learning_rate': config.optim.learning_rate, 'dropout': config.model.dropout,
          **{name: config.optim[name] for name in optim.NUMERIC_FIELDS}}


def make_fused_step(model, optim_config, num_steps: int, steps_per_epoch: int):
  """`step(states, inputs_KxBxT, targets, reset_K, values, lr_scale_K) -> (states, metrics)`:
  the train step of K trials at once; `values` holds each trial's `trial_values` as K-vectors."""
  unit_config = optim_config.copy_and_resolve_references()
  unit_config.learning_rate = 1.0
  unit_schedule = optim.make_schedule(unit_config, num_steps, steps_per_epoch)

  def one_trial(state, inputs, targets, reset, values, lr_scale):
    schedule = lambda count: values['learning_rate'] * unit_schedule(count)
    optimizer = optim.make_optimizer(optim_config, schedule,
                                     {k: values[k] for k in optim.NUMERIC_FIELDS})
    train_step = steps.make_train_step(model, optimizer, schedule, dropout_rate=values['dropout'])
    return train_step(state, inputs, targets, reset, lr_scale)

  return jax.vmap(one_trial)


def _stack(trees):
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def _trial(stacked, i: int):
  return jax.tree.map(lambda x: x[i], stacked)


def train_fused(trials_and_dirs: list, stop_request: interrupts.StopRequest,
                decisions=None) -> dict:
  """Trains one group (see `group`) together; returns {trial name: None, or its error}.

  Raises `interrupts.Interrupted` after checkpointing every trial on SIGTERM/SIGINT.
  `decisions` (a `halving.DecisionLog`): judge the trials at its rungs (`_run_in_rungs`).
  """
  errors, members = {}, []
  for trial, workdir in trials_and_dirs:
    try:
      members.append((trial, workdir, train.build(trial.config, workdir)))
    except SeqlabError as e:  # a bad trial fails alone; the others train
      errors[trial.name] = str(e)
  if not members:
    return errors
  with contextlib.ExitStack() as stack:
    for _, workdir, _ in members:
      workdir.mkdir(parents=True, exist_ok=True)
      stack.enter_context(run_lock.hold(workdir))
    errors.update(_train_group(members, stop_request, decisions))
  return errors


def run_group(trials_and_dirs: list, decisions=None) -> int:
  """Trains one fused group in this process (`python -m seqlab.sweeps.trial --fused`).

  Prints `error: [TRIAL] ...` for each trial that failed and returns 1 if any did.
  """
  if len(group(trials_and_dirs)) != 1:
    raise SeqlabError('--trial names trials that cannot be fused (other shapes or steps)')
  with interrupts.catch_stop_signals() as stop_request:
    try:
      errors = train_fused(trials_and_dirs, stop_request, decisions)
    except OSError as error:  # a refused write stops the group: one error line, exit 74
      workdir = next((w for _, w in trials_and_dirs
                      if str(error.filename or '').startswith(str(w))), trials_and_dirs[0][1])
      raise write_failures.from_os_error(error, workdir) or error from None
  for name, error in errors.items():
    print(f'error: [{name}] {error}', file=sys.stderr, flush=True)
  return 1 if errors else 0


def trial_mesh(num_trials: int, devices=None) -> jax.sharding.Mesh:
  """The devices a fused group of `num_trials` is spread over, along its trial axis.

  As many of this host's devices as divide the trials: 8 trials on 4 GPUs put 2
  on each; 6 trials on 4 devices use 3 of them (each trial is whole on one
  device, so the trials must divide the devices used). A trial's own batch is
  not split: a fused group uses devices for more trials, a run alone for a
  bigger batch.
  """
  devices = list(devices or jax.local_devices())
  return jax.sharding.Mesh(np.array(devices[:devices_used(num_trials, len(devices))]),
                           (TRIAL_AXIS,))


def devices_used(num_trials: int, num_devices: int) -> int:
  """The most devices, up to `num_devices`, that `num_trials` divide into."""
  return max(d for d in range(1, num_devices + 1) if num_trials % d == 0)


class FusedProgram:
  """The steps of K fused trials: one vmapped step over their stacked states, the trial axis
  sharded over the host's devices (`trial_mesh`)."""
  can_roll_back = False

  def __init__(self, members: list, states: list, model):
    first = members[0]
    self.mesh = trial_mesh(len(members))
    by_trial = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(TRIAL_AXIS))
    self._fused_step = jax.jit(make_fused_step(
        model, first.config.optim, first.config.train.num_steps,
        first.setup.batches.batches_per_epoch), in_shardings=by_trial, out_shardings=by_trial,
        donate_argnums=0)
    self._put = lambda tree: jax.device_put(tree, by_trial)
    self._setups = [m.setup for m in members]
    self.stacked = self._put(_stack(states))
    self._values = self._put({k: np.asarray([trial_values(m.config)[k] for m in members],
                                            np.float32) for k in trial_values(first.config)})

  def step(self, step: int, lr_scales: np.ndarray):
    data_start = time.perf_counter()
    batches = [setup.batches.batch(step) for setup in self._setups]
    inputs, targets = (np.stack([b[j] for b in batches]) for j in (0, 1))
    resets = np.asarray([b[2] for b in batches])
    data_seconds = time.perf_counter() - data_start
    self.stacked, metrics = self._fused_step(self.stacked, *self._put((inputs, targets, resets)),
                                             self._values, self._put(lr_scales))
    return metrics, data_seconds

  def state_of(self, i: int):
    return _trial(self.stacked, i)

  def metrics_of(self, host_metrics: list[dict], i: int) -> list[dict]:
    return [{k: v[i] for k, v in m.items()} for m in host_metrics]

  def restart(self, i: int, state) -> None:
    raise NotImplementedError('a fused trial stops after a NaN; it does not roll back alone')


def _train_group(members: list, stop_request: interrupts.StopRequest, decisions=None) -> dict:
  first_config, first_setup = members[0][0].config, members[0][2]
  model = registry.module_of(first_setup.model_config)
  tools = loop.Tools.make(model, first_config.log.sample_length)
  group = [loop.Member(trial.config, setup,
                       recorder_lib.RunRecorder(trial.config, workdir, setup,
                                                label=f'[{trial.name}] '), name=trial.name)
           for trial, workdir, setup in members]
  try:
    states = []
    for member in group:
      states.append(loop.resume(member, steps.init_state(
          member.setup.model_config, member.setup.optimizer, member.config.data.batch_size,
          member.config.seed)))
      member.recorder.describe(registry.count_params(states[-1].params), int(states[-1].step),
                               'fused')
    start = int(states[0].step)
    cfg = first_setup.model_config
    program = FusedProgram(group, states, model)
    print(f'fused: {len(group)} trials of {registry.describe(cfg)} in one '
          f'step on {program.mesh.size} {jax.local_devices()[0].platform} device(s), '
          + (f'resuming at step {start}' if start else 'from step 0'), flush=True)
    _run_in_rungs(program, group, tools, start, stop_request, model, decisions)
  finally:
    with contextlib.ExitStack() as closing:  # every recorder closes, even if one fails to
      for member in group:
        closing.callback(member.recorder.close)
  return {m.name: m.error for m in group if m.error is not None}


def _run_in_rungs(program: FusedProgram, group: list, tools: loop.Tools, start: int,
                  stop_request: interrupts.StopRequest, model, decisions) -> None:
  """`loop.run` of the group; with `decisions` (a `halving.DecisionLog`), rung by rung.

  At each rung the group stops (checkpoints), reports its trials' val losses
  there together, and goes on with those that continue: a trial that stops, or
  waits for its decision, leaves the group with its checkpoint at the rung, and
  the step is compiled again for the trials left (`FusedProgram` of fewer, on a
  mesh for their number). A rung already decided in the log is not judged again.
  """
  from seqlab.sweeps import halving  # pylint: disable=g-import-not-at-top
  members = list(group)
  rungs = decisions.rungs.of(members[0].config.train.num_steps) if decisions else []
  for number, step in rungs:
    if step < start:
      continue
    if step > start:
      loop.run(program, members, tools, start, stop_request, stop_at_step=step)
      start = step
    ledger = decisions.report([
        halving.Report(m.name, number, step, m.recorder.meta['last_val_loss'])
        for m in members if m.alive and m.recorder.meta['last_val_step'] == step])
    going_on = []  # (index in the program, member)
    for i, member in enumerate(members):
      decided = ledger.decision(member.name, number)
      if not member.alive:  # stopped by a NaN: its error is kept, its place freed
        continue
      if decided is not None and decided['decision'] == halving.CONTINUE:
        member.recorder.print(f'halving: {halving.describe_decision(decided)}')
        going_on.append((i, member))
        continue
      if decided is not None:
        member.recorder.print(f'halving: {halving.describe_decision(decided)}; its '
                              'checkpoint is kept')
      elif ledger.report_of(member.name, number) is not None:
        member.recorder.print(f'halving: waits at rung {number} (step {step}) for more trials '
                              'to reach it, checkpointed; the sweep starts it again if it '
                              'continues')
      else:  # never reported there (past the rung when early stopping began): not judged
        going_on.append((i, member))
    if len(going_on) != len(members):
      if going_on:
        program = FusedProgram([m for _, m in going_on],
                               [program.state_of(i) for i, _ in going_on], model)
        print(f'fused: {len(going_on)} of {len(members)} trials continue after rung {number} '
              f'(step {step}), in one step on {program.mesh.size} device(s)', flush=True)
      members = [m for _, m in going_on]
    if not members:
      return
    if stop_request.signum is not None:
      raise interrupts.Interrupted(stop_request.signum, step)
  loop.run(program, members, tools, start, stop_request)
