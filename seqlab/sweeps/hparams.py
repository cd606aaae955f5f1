"""The HParams experiment of a sweep: the swept keys as TensorBoard's differing columns.

Each trial writes its own session (its config values and final metrics) into
its run directory. The sweep writes the one experiment summary that says which
columns TensorBoard shows: the swept keys (`differs` where their values differ
between trials), a few keys worth seeing anyway, and the final/* metrics. It
goes into SWEEP_DIR's own event file (`*.sweep-hparams`), rewritten at each
launch, so `tensorboard --logdir SWEEP_DIR` opens on it.

A trial stopped at a rung by early stopping (`seqlab.sweeps.halving`) never
writes its session at the end: the sweep's process writes one for it
(`write_stopped_session`, into the trial's `*.halving` event file), with its
val losses so far as its metrics and its `status` (`stopped at rung N (step
S)`), a column the experiment of such a sweep shows first.

tensorboardX's copy of TensorBoard's api.proto lacks HParamInfo's `differs`
(field 7); it is added to the serialized message by hand.
"""

import json
import pathlib

from google.protobuf import struct_pb2
from tensorboardX import summary as tbx_summary
from tensorboardX import writer as tbx_writer
from tensorboardX.proto import api_pb2
from tensorboardX.proto import plugin_hparams_pb2
from tensorboardX.proto import summary_pb2

from seqlab.models import registry
from seqlab.run import directory as rundir
from seqlab.run import metrics_writer

EXPERIMENT_TAG = '_hparams_/experiment'
SUFFIX = '.sweep-hparams'
# Shown after the swept keys when the sweep does not set them: what a reader looks for first.
# Before them: model.name and the fields of the trials' model (a model group holds exactly
# its config dataclass's fields: `seqlab.models.registry`), read from the configs, so this
# process imports no model (nor JAX).
CONSTANTS = ('optim.learning_rate', 'data.batch_size', 'data.seq_len', 'train.num_steps', 'seed')
# The metrics each trial's recorder writes when it finishes (seqlab/run/recorder.py).
FINAL_METRICS = ('final/val_loss', 'final/val_bpc', 'final/best_val_loss', 'final/test_loss',
                 'final/test_bpc', 'final/val_loss_stream', 'final/val_loss_windows',
                 'final/chars_per_sec', 'final/num_params')
_DIFFERS = b'\x38\x01'  # field 7 (differs), varint 1
STATUS = 'status'  # the hparam of a stopped trial's session: `stopped at rung N (step S)`
STOPPED_SUFFIX = '.halving'  # the event file of a stopped trial's session


def _type(value) -> int:
  if isinstance(value, bool):
    return api_pb2.DATA_TYPE_BOOL
  if isinstance(value, (int, float)):
    return api_pb2.DATA_TYPE_FLOAT64
  return api_pb2.DATA_TYPE_STRING


def _hparam_info(name: str, values: list) -> api_pb2.HParamInfo:
  """`name` with its distinct values as its domain; `differs` if there are several."""
  distinct = list(dict.fromkeys(values))
  types = {_type(v) for v in distinct}
  kind = types.pop() if len(types) == 1 else api_pb2.DATA_TYPE_STRING
  domain = struct_pb2.ListValue()
  domain.extend(distinct if kind != api_pb2.DATA_TYPE_STRING else [str(v) for v in distinct])
  info = api_pb2.HParamInfo(name=name, type=kind, domain_discrete=domain)
  if len(distinct) > 1:
    info = api_pb2.HParamInfo.FromString(info.SerializeToString() + _DIFFERS)
  return info


def columns(trials: list) -> list[tuple[str, list]]:
  """(key, each trial's value): the swept keys in declaration order, then model.name and
  the model's other fields, then CONSTANTS (each where every trial has it)."""
  flat = [metrics_writer.flatten_config(json.loads(t.config.to_json_best_effort()))
          for t in trials]
  swept = list(dict.fromkeys(k for t in trials for k in t.overrides))
  model_keys = ['model.name'] + sorted({k for f in flat for k in f if k.startswith('model.')}
                                        - {'model.name', f'model.{registry.SOURCE_KEY}'})
  keys = swept + [k for k in dict.fromkeys(model_keys + list(CONSTANTS)) if k not in swept]
  return [(k, [f[k] for f in flat]) for k in keys if all(k in f for f in flat)]


def experiment_summary(trials: list, early_stop: bool = False) -> summary_pb2.Summary:
  """The experiment: the `columns` and FINAL_METRICS; first a `status` column (empty for
  trials that ran to the end) if the sweep stops trials early."""
  status = [api_pb2.HParamInfo(name=STATUS, type=api_pb2.DATA_TYPE_STRING)] if early_stop else []
  experiment = api_pb2.Experiment(
      hparam_infos=status + [_hparam_info(k, values) for k, values in columns(trials)],
      metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m)) for m in FINAL_METRICS])
  content = plugin_hparams_pb2.HParamsPluginData(experiment=experiment, version=0)
  metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(
      plugin_name='hparams', content=content.SerializeToString()))
  return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=EXPERIMENT_TAG,
                                                              metadata=metadata)])


def write_experiment(sweep_dir: pathlib.Path, trials: list, early_stop: bool = False) -> None:
  """Replaces SWEEP_DIR's experiment summary with one for `trials`."""
  sweep_dir = pathlib.Path(sweep_dir)
  for old in sweep_dir.glob(f'events.out.tfevents.*{SUFFIX}'):
    old.unlink()
  writer = tbx_writer.FileWriter(str(sweep_dir), filename_suffix=SUFFIX)
  writer.add_summary(experiment_summary(trials, early_stop))
  writer.close()


def write_stopped_session(run_dir: pathlib.Path, stopped: dict) -> None:
  """The HParams session of a trial stopped at a rung (`stopped`: what its stopped.json
  says): its config and `status`, and its val losses so far as the final/* metrics."""
  run_dir = pathlib.Path(run_dir)
  for old in run_dir.glob(f'events.out.tfevents.*{STOPPED_SUFFIX}'):
    old.unlink()  # a session written before a crash: this one replaces it
  config = rundir.load_json(run_dir / rundir.CONFIG_FILENAME) or {}
  values = {STATUS: stopped['status'], **metrics_writer.flatten_config(config)}
  metrics = {f'final/{k}': stopped[k] for k in ('val_loss', 'val_bpc', 'best_val_loss')
             if stopped.get(k) is not None}
  _, session_start, session_end = tbx_summary.hparams(values, metrics)
  writer = tbx_writer.FileWriter(str(run_dir), filename_suffix=STOPPED_SUFFIX)
  for summary in (session_start, session_end):
    writer.add_summary(summary)
  for tag, value in metrics.items():
    writer.add_summary(tbx_summary.scalar(tag, value), stopped['step'])
  writer.close()
