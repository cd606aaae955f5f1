"""Config values a new user gets wrong, and what a CPU host does with a config: optimizer fields
out of range, unknown variants, the default CPU device split, the time estimate for a config sized
for an accelerator."""

import os

import jax
from ml_collections import config_dict
import pytest

from conftest import run_command
from configs import enwik8
from configs import shakespeare
from seqlab import cpu_estimate
from seqlab import optim
from seqlab import parallel
from seqlab import steps
from seqlab.errors import SeqlabError
from seqlab.models import char_rnn as model_lib


# --- optim.check


@pytest.mark.parametrize('field,value,allowed', [
    ('learning_rate', -1.0, '> 0'), ('learning_rate', 0.0, '> 0'),
    ('learning_rate', float('nan'), '> 0'), ('b1', 1.0, 'in [0, 1)'), ('b1', -0.1, 'in [0, 1)'),
    ('b2', 1.5, 'in [0, 1)'), ('weight_decay', -1e-4, '>= 0'),
    ('grad_clip', -1.0, '>= 0 (0: no clipping)'),
    ('warmup_steps', -5, '>= 0'), ('final_lr_fraction', -0.1, 'in [0, 1]'),
    ('final_lr_fraction', 1.5, 'in [0, 1]'), ('decay_rate', 0.0, 'in (0, 1]'),
    ('decay_rate', 1.1, 'in (0, 1]'), ('decay_after_epochs', -1, '>= 0')])
def test_an_optimizer_field_out_of_range_is_one_line_naming_it(field, value, allowed):
  config = shakespeare.get_config().optim
  config[field] = value
  with pytest.raises(SeqlabError) as error:
    optim.check(config)
  message = str(error.value)
  assert message.startswith(f'optim.{field} must be {allowed}, got {value!r}')
  assert '\n' not in message
  # make_schedule and make_optimizer refuse it too, before building anything.
  with pytest.raises(SeqlabError, match=f'optim.{field}'):
    optim.make_schedule(config, 100, 10)
  with pytest.raises(SeqlabError, match=f'optim.{field}'):
    optim.make_optimizer(config, lambda step: 1.0)


def test_unknown_optimizer_and_schedule_names_list_the_known_ones():
  config = shakespeare.get_config().optim
  config.schedule = 'linear'
  with pytest.raises(SeqlabError, match="unknown optim.schedule 'linear'; use 'constant', "
                                        "'cosine' or 'exponential'"):
    optim.check(config)
  config.name = 'sgd'
  with pytest.raises(SeqlabError, match="unknown optim.name 'sgd'; use 'adam', 'adamw' or "
                                        "'rmsprop'"):
    optim.check(config)


@pytest.mark.parametrize('make', [shakespeare.get_config, enwik8.get_config])
def test_every_shipped_config_passes_and_edges_are_allowed(make):
  for variant in (None, *([] if make is enwik8.get_config else ['cpu', 'cpu15', 'smoke'])):
    optim.check(make(variant).optim)
  config = make().optim
  config.b1, config.b2, config.grad_clip, config.warmup_steps = 0.0, 0.0, 0.0, 0
  config.final_lr_fraction, config.decay_rate, config.decay_after_epochs = 1.0, 1.0, 0
  optim.check(config)


def test_a_partial_optimizer_config_is_checked_on_what_it_has():
  """The bench builds an optimizer from a config without the schedule's fields."""
  config = config_dict.ConfigDict(dict(name='adam', learning_rate=1e-3, b1=0.9, b2=0.999,
                                       weight_decay=0.0, grad_clip=5.0, schedule='constant',
                                       warmup_steps=0))
  optim.make_optimizer(config, optim.make_schedule(config, 10, 1))
  config.learning_rate = -1e-3
  with pytest.raises(SeqlabError, match='optim.learning_rate must be > 0'):
    optim.check(config)


@pytest.mark.slow
def test_a_negative_learning_rate_stops_launch_before_training(tmp_path):
  workdir = tmp_path / 'run'
  result = run_command('--config', 'configs/shakespeare.py:smoke',
                       '--config.optim.learning_rate=-1', '--workdir', workdir)
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip().splitlines() == [
      'error: optim.learning_rate must be > 0, got -1.0']
  assert 'step ' not in result.stdout
  assert list(tmp_path.iterdir()) == []


# --- unknown variants


@pytest.mark.slow
@pytest.mark.parametrize('config_arg,message', [
    ('configs/shakespeare.py:gpu',
     "error: unknown variant 'gpu' of configs/shakespeare.py; known variants: cpu, cpu15, smoke"),
    ('configs/shakespeare.py:smoke,huge',
     "error: unknown variant 'huge' of configs/shakespeare.py; known variants: cpu, cpu15, smoke"),
    ('configs/enwik8.py:cpu',
     "error: unknown variant 'cpu' of configs/enwik8.py; known variants: smoke")])
def test_an_unknown_variant_is_one_error_line_naming_the_known_ones(tmp_path, config_arg,
                                                                    message):
  result = run_command('--config', config_arg, '--workdir', tmp_path / 'run')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [message]
  assert not (tmp_path / 'run').exists()


# --- the default CPU device split (parallel.cpu_devices=0)


def _parallel_config(cpu_devices=0, **fields):
  config = shakespeare.get_config().parallel
  config.cpu_devices = cpu_devices
  for key, value in fields.items():
    config[key] = value
  return config


@pytest.fixture
def cpu_only_host(monkeypatch):
  """A CPU-only host with 4 cores, no device count forced, one process."""
  monkeypatch.setattr(parallel, 'has_accelerator', lambda: False)
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 1, 2, 3})
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  monkeypatch.delenv('JAX_COORDINATOR_ADDRESS', raising=False)


@pytest.mark.parametrize('batch_size,expected', [(64, 4), (6, 3), (10, 2), (7, 0), (1, 0)])
def test_the_default_is_one_device_per_core_that_divides_the_batch(cpu_only_host, batch_size,
                                                                   expected):
  assert parallel.cpu_device_count(_parallel_config(), batch_size) == expected


def test_an_explicit_count_is_exactly_that(cpu_only_host, monkeypatch):
  assert parallel.cpu_device_count(_parallel_config(1), 64) == 1
  assert parallel.cpu_device_count(_parallel_config(3), 64) == 3  # the batch check is the run's
  monkeypatch.setattr(parallel, 'has_accelerator', lambda: True)
  assert parallel.cpu_device_count(_parallel_config(2), 64) == 2
  with pytest.raises(SeqlabError, match=r'parallel.cpu_devices must be >= 0 \(0: one per core '
                                        r'on a host without an accelerator\), got -2'):
    parallel.cpu_device_count(_parallel_config(-2), 64)


def test_the_default_leaves_jax_alone_with_an_accelerator_forced_devices_or_hosts(
    cpu_only_host, monkeypatch):
  assert parallel.cpu_device_count(_parallel_config(distributed=True), 64) == 0
  assert parallel.cpu_device_count(_parallel_config(coordinator_address='h:1234'), 64) == 0
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
  assert parallel.cpu_device_count(_parallel_config(), 64) == 0
  monkeypatch.delenv('XLA_FLAGS')
  monkeypatch.setattr(parallel, 'has_accelerator', lambda: True)
  assert parallel.cpu_device_count(_parallel_config(), 64) == 0


@pytest.mark.parametrize('platforms,expected', [('cpu', False), ('cuda', True), ('cuda,cpu', True),
                                                ('tpu', True)])
def test_jax_platforms_decides_whether_there_is_an_accelerator(monkeypatch, platforms, expected):
  monkeypatch.setattr(parallel, '_jax_platforms', lambda: platforms)
  assert parallel.has_accelerator() is expected


def test_without_a_jax_plugin_there_is_no_accelerator(monkeypatch):
  """JAX uses a GPU/TPU only through a plugin (or libtpu); this test's venv has none."""
  monkeypatch.setattr(parallel, '_jax_platforms', lambda: '')
  monkeypatch.setattr(parallel.importlib.metadata, 'entry_points', lambda group: [])
  monkeypatch.setattr(parallel.importlib.util, 'find_spec', lambda name: None)
  assert parallel.has_accelerator() is False


def test_the_number_form_keeps_its_meaning():
  """`use_cpu_devices(N)` (the bench): 0 leaves JAX's default and touches nothing."""
  assert parallel.use_cpu_devices(0) == 0
  with pytest.raises(SeqlabError, match="must be >= 0 \\(0: JAX's default\\), got -1"):
    parallel.use_cpu_devices(-1)


@pytest.mark.slow
def test_a_fresh_process_splits_into_one_device_per_core():
  """The config form, before JAX starts, as `launch.py` calls it: the smoke config's batch of 16
  over this machine's cores (the largest count up to them that divides 16)."""
  cores = len(os.sched_getaffinity(0))
  expected = max(n for n in range(1, cores + 1) if 16 % n == 0)
  code = ('from configs import shakespeare; from seqlab import parallel\n'
          "parallel.use_cpu_devices(shakespeare.get_config('smoke'))\n"
          'import jax; print(jax.device_count())')
  result = run_command(code=code, env={'XLA_FLAGS': None, 'JAX_PLATFORMS': 'cpu'}, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split() == [str(expected)]


@pytest.mark.slow
def test_split_devices_wait_patiently_for_each_other():
  """A split CPU gets XLA's collective timeouts raised (a loaded host once aborted a run after
  40 s); XLA accepts the flags (it aborts on unknown ones) and an all-reduce still runs."""
  code = ('import os, jax, jax.numpy as jnp; from seqlab import parallel\n'
          'parallel.use_cpu_devices(2)\n'
          "print(jax.pmap(lambda x: jax.lax.psum(x, 'i'), axis_name='i')(jnp.ones(2)).tolist())\n"
          "print(os.environ['XLA_FLAGS'])")
  result = run_command(code=code, env={'XLA_FLAGS': '--xla_cpu_collective_call_warn_stuck_'
                                                    'timeout_seconds=60'}, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  summed, flags = result.stdout.strip().splitlines()
  assert summed == '[2.0, 2.0]'
  assert '--xla_cpu_collective_call_terminate_timeout_seconds=1800' in flags
  assert '--xla_cpu_collective_call_warn_stuck_timeout_seconds=60' in flags  # the user's kept
  assert 'warn_stuck_timeout_seconds=300' not in flags


# --- the time estimate on a CPU

L_PARAMS = 5_415_489  # the default 3x512 LSTM on tiny Shakespeare's 65 symbols
README_CEILING = 172e9  # the matmul ceiling seqlab.bench measured when it timed the models below


def _params_of(config, vocab_size=65) -> int:
  model_config = model_lib.ModelConfig.from_config(config.model, vocab_size)
  schedule = optim.make_schedule(config.optim, 10, 1)
  state = jax.eval_shape(lambda: steps.init_state(
      model_config, optim.make_optimizer(config.optim, schedule), config.data.batch_size, 0))
  return model_lib.count_params(state.params)


def test_the_recommended_variant_is_described_as_configured():
  config = shakespeare.get_config('cpu')
  assert cpu_estimate.CPU_VARIANT == 'configs/shakespeare.py:cpu'
  assert cpu_estimate.CPU_VARIANT_PARAMS == _params_of(config)
  assert cpu_estimate.CPU_VARIANT_CHARS_PER_STEP == config.data.batch_size * config.data.seq_len
  assert cpu_estimate.CPU_VARIANT_STEPS == config.train.num_steps
  assert cpu_estimate.CPU_VARIANT_DEVICES == config.parallel.cpu_devices
  assert _params_of(shakespeare.get_config()) == L_PARAMS


@pytest.mark.parametrize('params,chars,num_steps,devices,measured_s', [
    (L_PARAMS, 64 * 100, 1000, 1, 23 * 60),  # README: ~23 min per 1,000 steps, one device
    (L_PARAMS, 64 * 100, 1000, 2, 64 * 100 * 1000 / 4738),  # the bench, split in two
    (cpu_estimate.CPU_VARIANT_PARAMS, 32 * 64, 4900, 2, 7.3 * 60)])  # :cpu, the whole command
def test_the_estimate_is_within_a_factor_of_1_5_of_what_was_measured(params, chars, num_steps,
                                                                     devices, measured_s):
  estimate = cpu_estimate.estimate_seconds(params, chars, num_steps, devices, README_CEILING)
  assert 1 / 1.5 < estimate / measured_s < 1.5


def test_a_config_sized_for_an_accelerator_gets_one_note_line():
  note = cpu_estimate.note('cpu', 2, L_PARAMS, 64 * 100, 6000, flops_per_second=README_CEILING)
  assert note == ('note: this config is sized for an accelerator: about 2h41m for 6,000 steps '
                  'on this CPU; configs/shakespeare.py:cpu trains in about 7 min')
  slower = cpu_estimate.note('cpu', 2, L_PARAMS, 64 * 100, 6000,
                             flops_per_second=README_CEILING / 4)
  assert 'about 10h45m for 6,000' in slower and 'trains in about 27 min' in slower
  assert 'days' in cpu_estimate.note('cpu', 2, 22_000_000, 128 * 128, 20_000,
                                     flops_per_second=README_CEILING)


def test_no_note_off_cpu_under_the_threshold_or_for_small_configs():
  never = lambda: pytest.fail('measured the matmul rate for a config too small to need it')
  args = (2, L_PARAMS, 64 * 100)
  assert cpu_estimate.note('gpu', *args, 6000, measure=never) is None
  assert cpu_estimate.note('tpu', *args, 6000, measure=never) is None
  assert cpu_estimate.note('cpu', *args, 0, measure=never) is None
  # :cpu and :smoke are far under 30 minutes on any CPU: no measurement at all.
  assert cpu_estimate.note('cpu', 2, cpu_estimate.CPU_VARIANT_PARAMS, 32 * 64, 4900,
                           measure=never) is None
  assert cpu_estimate.note('cpu', 2, 23_009, 16 * 32, 40, measure=never) is None
  # The threshold: 1,000 steps of the 3x512 LSTM take ~27 min at the README's rate, 6,000 hours.
  assert cpu_estimate.note('cpu', *args, 1000, flops_per_second=README_CEILING) is None
  assert cpu_estimate.note('cpu', *args, 1000, flops_per_second=README_CEILING,
                           threshold_s=20 * 60) is not None
  times = [cpu_estimate.estimate_seconds(L_PARAMS, 6400, n, 2, README_CEILING)
           for n in (1000, 2000, 4000)]
  assert times == sorted(times) and times[2] == pytest.approx(4 * times[0])
  assert cpu_estimate.estimate_seconds(L_PARAMS, 6400, 1000, 2, 2 * README_CEILING) == \
      pytest.approx(times[0] / 2)


def test_the_measured_rate_is_quick_and_plausible():
  import time  # pylint: disable=g-import-not-at-top
  cpu_estimate.measure_flops_per_second(0.01)  # the first call in a process may initialize JAX
  start = time.perf_counter()
  rate = cpu_estimate.measure_flops_per_second()
  assert time.perf_counter() - start < 2.0  # 0.1-0.3 s unloaded; this machine is shared
  assert 1e8 < rate < 1e14
