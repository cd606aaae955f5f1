"""The zoo on seqlab's one interface (configs/zoo.py, seqlab.models.registry): every model
trains, evaluates, resumes exactly, samples, fuses and splits over devices with the commands
the LSTM uses; bad model configs are one error line; a run made before the zoo still loads,
samples and resumes (tests/fixtures/pre_zoo_run, trained by the code of commit f95ccd1)."""

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import zoo
from conftest import final_params, run_command, scalars
from seqlab import data
from seqlab import evaluate as evaluate_lib
from seqlab import interrupts
from seqlab import optim
from seqlab import steps
from seqlab import train
from seqlab.errors import SeqlabError
from seqlab.models import registry
from seqlab.run import load
from seqlab.sweeps import declare as sweep
from seqlab.sweeps import fused

MODELS = ['mingru', 'minlstm', 'hawk', 'mamba', 'gpt']
FIXTURE = pathlib.Path(__file__).parent / 'fixtures' / 'pre_zoo_run'
# The fixture's own training command; it was stopped after step 10 of 20 (stop_at_step).
FIXTURE_ARGS = ['--config', 'configs/shakespeare.py:smoke', '--config.model.hidden_size=16',
                '--config.train.num_steps=20',
                '--config.log.checkpoint_every_steps=10', '--config.eval.every_steps=10',
                '--config.log.sample_steps=(10,)', '--config.log.novelty_num_samples=0',
                '--config.parallel.cpu_devices=1', '--config.data.test_fraction=0.0']


def _tiny(model: str, text_file, **overrides):
  """configs/zoo.py:MODEL,smoke on `text_file`, smaller and shorter, with dotted overrides."""
  config = zoo.get_config(f'{model},smoke')
  config.data.path = str(text_file)
  fields = {'data.test_fraction': 0.0, 'data.batch_size': 4, 'data.seq_len': 8,
            'eval.num_streams': 4, 'eval.seq_len': 16, 'eval.window': 16 if model != 'gpt' else 8,
            'log.sample_length': 20, 'train.num_steps': 16, 'eval.every_steps': 8,
            'log.every_steps': 1, 'log.checkpoint_every_steps': 8, 'log.sample_steps': (8,),
            'log.novelty_num_samples': 0, **overrides}
  if model == 'gpt':  # windows shorter than the context: the KV cache's append path runs
    config.model.context = 16
  for key, value in fields.items():
    group, field = key.split('.')
    config[group][field] = value
  return config


# --- Configuration: one error line for what cannot work.

@pytest.mark.parametrize('change, message', [
    ({'model.name': 'transformer'}, "unknown model.name 'transformer'; use one of char_rnn"),
    ({'model.hidden_size': 64}, "model.name='mamba' has no field(s) hidden_size"),
    ({'model.d_state': 0}, 'model.d_state must be an integer >= 1'),
])
def test_bad_model_configs_are_one_error(text_file, tmp_path, change, message):
  config = _tiny('mamba', text_file)
  for key, value in change.items():
    config.model[key.split('.')[1]] = value
  with pytest.raises(SeqlabError, match=message.replace('(', r'\(').replace(')', r'\)')):
    train.build(config, tmp_path / 'run')


def test_a_gpt_refuses_to_carry_state_or_read_past_its_window(text_file, tmp_path):
  config = _tiny('gpt', text_file)
  config.data.batching = 'streams'
  with pytest.raises(SeqlabError, match='cannot carry state past its window of 16 tokens; set '
                     '--config.data.batching=windows'):
    train.build(config, tmp_path / 'run')
  config = _tiny('gpt', text_file, **{'eval.window': 17})
  with pytest.raises(SeqlabError, match=r"eval.window=17 is longer than the model's context of 16"):
    train.build(config, tmp_path / 'run')
  config = _tiny('gpt', text_file)
  config.model.num_heads = 3
  with pytest.raises(SeqlabError, match='heads'):
    train.build(config, tmp_path / 'run')


@pytest.mark.slow  # trains
def test_a_run_does_not_resume_as_another_model(text_file, tmp_path):
  train.train_and_evaluate(_tiny('mingru', text_file, **{'train.num_steps': 2}), tmp_path / 'run')
  for config, field in ((_tiny('hawk', text_file), 'name'),
                        (_tiny('mingru', text_file, **{'model.log_space': False}), 'log_space')):
    with pytest.raises(SeqlabError, match=f'holds a run with model.{field}='):
      train.build(config, tmp_path / 'run')
  # Dropout and the scan change neither shapes nor the function: a run may resume with them.
  train.build(_tiny('mingru', text_file, **{'model.dropout': 0.2, 'model.scan': 'associative'}),
              tmp_path / 'run')


def test_a_model_field_added_later_resumes_at_its_default(tmp_path):
  """A run saved before a field existed (its config.json lacks it) resumes when the config
  leaves the field at its default, and is refused when the config changes it."""
  from seqlab.run import directory as rundir
  config = zoo.get_config('mingru').to_dict()
  del config['model']['conv_width']  # as a min_rnn run saved before conv_width
  (tmp_path / rundir.CONFIG_FILENAME).write_text(json.dumps(config))
  config['model']['conv_width'] = 0  # the default, said explicitly
  rundir.check_compatible(tmp_path, config)
  config['model']['conv_width'] = 4
  with pytest.raises(SeqlabError, match='holds a run with model.conv_width=0, but the config says 4'):
    rundir.check_compatible(tmp_path, config)


def test_adamw_decays_matrices_only_as_nanogpt_does():
  config = zoo.get_config('gpt').optim
  config.schedule, config.grad_clip = 'constant', 0.0
  optimizer = optim.make_optimizer(config, optim.make_schedule(config, 10, 1))
  params = {'kernel': jnp.ones((2, 3)), 'bias': jnp.ones(3), 'embed': jnp.ones((4, 2))}
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = optimizer.update(zero_grads, optimizer.init(params), params)
  new = optax.apply_updates(params, updates)
  shrunk = 1 - config.learning_rate * config.weight_decay  # decoupled decay, no gradient
  np.testing.assert_allclose(new['kernel'], shrunk, rtol=1e-6)
  np.testing.assert_allclose(new['embed'], shrunk, rtol=1e-6)
  np.testing.assert_array_equal(new['bias'], 1.0)
  config.decay = 'all'  # the default: every parameter decays
  optimizer = optim.make_optimizer(config, optim.make_schedule(config, 10, 1))
  updates, _ = optimizer.update(zero_grads, optimizer.init(params), params)
  np.testing.assert_allclose(optax.apply_updates(params, updates)['bias'], shrunk, rtol=1e-6)


def test_every_variant_names_a_model_of_about_the_lstms_size():
  sizes = {}
  for model in MODELS + ['lstm']:
    config = registry.config_of(zoo.get_config(model).model, 65)
    sizes[model] = registry.count_params(jax.eval_shape(lambda c=config: registry.init_params(c, 0)))
  assert all(0.75e6 < n < 0.9e6 for n in sizes.values()), sizes
  with pytest.raises(ValueError, match='needs a model first'):
    zoo.get_config('smoke')


# --- Every model through the commands the LSTM uses.

@pytest.mark.slow
@pytest.mark.parametrize('model', MODELS)
def test_each_model_resumes_exactly_and_samples(model, text_file, tmp_path):
  config = _tiny(model, text_file)
  whole = train.train_and_evaluate(config, tmp_path / 'whole')
  assert train.train_and_evaluate(config, tmp_path / 'split', stop_at_step=5) is None
  resumed = train.train_and_evaluate(config, tmp_path / 'split')
  for key in ('val_loss', 'best_val_loss', 'best_step', 'steps'):
    assert resumed[key] == whole[key], key
  assert scalars(tmp_path / 'split', 'train/loss') == scalars(tmp_path / 'whole', 'train/loss')
  assert whole['val_loss'] < scalars(tmp_path / 'whole', 'train/loss')[0][1]  # it learned

  # The evaluation results.json reports is that of the saved best parameters.
  run = load.load_run(tmp_path / 'whole')
  setup = train.build(config, tmp_path / 'whole')
  again = evaluate_lib.evaluate(jax.jit(steps.make_eval_step(run.model)), run.params,
                                setup.model_config, setup.corpus.val, config.eval)
  assert again['loss'] == pytest.approx(whole['best_val_loss'], rel=1e-6)

  args = ('--workdir', tmp_path / 'whole', '--prime', 'ANNA:', '--length', '40', '--seed', '2')
  first, second = (run_command(*args, module='seqlab.sample') for _ in range(2))
  assert first.returncode == 0, first.stderr[-2000:]
  assert first.stdout == second.stdout and first.stdout.startswith('ANNA:')
  assert len(first.stdout.rstrip('\n')) >= len('ANNA:') + 40
  neurons = run_command('--workdir', tmp_path / 'whole', '--max_chars', '300',
                        module='seqlab.neurons')
  if model in ('mamba', 'gpt'):  # no state of units to correlate
    assert neurons.returncode == 2 and neurons.stderr.startswith('error: '), neurons.stderr
  else:
    assert neurons.returncode == 0, neurons.stderr[-2000:]
    report = json.loads((tmp_path / 'whole' / 'neurons' / 'units.json').read_text())
    seen = [u['unit'] for entry in report.values() for u in entry['units']]
    assert seen and all(u.split('/')[1] == 'h' for u in seen)  # layer/h/index


@pytest.mark.slow
@pytest.mark.parametrize('model', ['mingru', 'hawk', 'mamba', 'gpt'])
def test_each_model_fuses_as_trained_alone(model, text_file, tmp_path):
  base = _tiny(model, text_file, **{'model.dropout': 0.0})
  trials = sweep.make_trials(base, sweep.zipped(
      sweep.axis('optim.learning_rate', [3e-3, 2e-2]), sweep.axis('model.dropout', [0.0, 0.3])))
  assert fused.train_fused([(t, tmp_path / 'fused' / t.name) for t in trials],
                           interrupts.StopRequest()) == {}
  for trial in trials:
    alone = train.train_and_evaluate(trial.config, tmp_path / 'alone' / trial.name)
    together = json.loads((tmp_path / 'fused' / trial.name / 'results.json').read_text())
    assert together['val_loss'] == pytest.approx(alone['val_loss'], rel=2e-5), trial.name
    # Batched matmuls round differently; Adam turns that into ~1e-6 on parameters near zero.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 final_params(tmp_path / 'fused' / trial.name),
                 final_params(tmp_path / 'alone' / trial.name))


@pytest.mark.slow
@pytest.mark.parametrize('model', MODELS)
def test_each_model_splits_its_batch_over_devices(model, text_file, tmp_path):
  """Two CPU devices (the batch and the carried state split) train as one device does."""
  config_file = tmp_path / 'tiny.py'
  config_file.write_text(
      'import json\nfrom ml_collections import config_dict\n'
      f'def get_config(arg=None):\n  return config_dict.ConfigDict(json.loads({_tiny(model, text_file).to_json()!r}))\n')
  results = {}
  for devices in (1, 2):
    workdir = tmp_path / f'devices-{devices}'
    done = run_command('--config', config_file, '--workdir', workdir,
                       f'--config.parallel.cpu_devices={devices}')
    assert done.returncode == 0, done.stderr[-3000:]
    assert f'{devices} cpu device' in done.stdout
    results[devices] = json.loads((workdir / 'results.json').read_text())
  assert results[2]['val_loss'] == pytest.approx(results[1]['val_loss'], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('model', ['mingru', 'hawk'])
def test_recorded_states_are_the_carry_after_each_symbol(model):
  """What seqlab.neurons records at step t is the state the model carries after t+1 symbols."""
  config = registry.config_of(zoo.get_config(f'{model},smoke').model, 11)
  module = registry.module_of(config)
  params = registry.init_params(config, 3)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 11, (1, 6)), jnp.int32)
  _, variables = module.apply({'params': params}, tokens, registry.init_carry(module.config, 1),
                              mutable=['intermediates'])
  recorded = registry.recorded_states(config, variables['intermediates'])
  assert [(layer, kind) for layer, kind, _ in recorded] == [(0, 'h'), (1, 'h')]
  step = jax.jit(lambda params, token, carry: module.apply({'params': params}, token, carry))
  carry = registry.init_carry(module.config, 1)
  for t in range(6):  # one symbol at a time (== the whole sequence: tests/test_zoo_*.py)
    _, carry = step(params, tokens[:, t:t + 1], carry)
    for layer, _, values_NxH in recorded:
      state = carry[layer] if model == 'mingru' else carry[layer]['rg_lru']
      np.testing.assert_allclose(values_NxH[t], state[0], rtol=1e-5, atol=1e-6)
  with pytest.raises(SeqlabError, match='has none'):
    registry.neuron_states(registry.config_of(zoo.get_config('mamba').model, 11))


# --- A run directory made before the zoo.

def test_a_pre_zoo_run_loads_bit_identical():
  saved = np.load(FIXTURE.parent / 'pre_zoo_run_params.npz')  # what that code loaded
  run = load.load_run(FIXTURE, 'latest')
  assert registry.describe(run.model.config) == '2x16 lstm' and run.step == 10
  leaves = {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_flatten_with_path(run.params)[0]}
  assert sorted(leaves) == sorted(saved.files)
  for key, value in leaves.items():
    np.testing.assert_array_equal(value, saved[key], err_msg=key)


@pytest.mark.slow
def test_a_pre_zoo_run_samples_and_resumes_as_if_trained_today(tmp_path):
  copy = tmp_path / 'pre_zoo_run'
  shutil.copytree(FIXTURE, copy)  # the fixture itself is never written
  sampled = run_command('--workdir', copy, '--prime', 'ROMEO:', '--length', '30',
                        module='seqlab.sample')
  assert sampled.returncode == 0 and sampled.stdout.startswith('ROMEO:'), sampled.stderr
  resumed = run_command(*FIXTURE_ARGS, '--workdir', copy)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'resuming at step 10' in resumed.stdout
  today = run_command(*FIXTURE_ARGS, '--workdir', tmp_path / 'today')
  assert today.returncode == 0, today.stderr[-3000:]
  old, new = (json.loads((d / 'results.json').read_text()) for d in (copy, tmp_path / 'today'))
  # The same numbers up to float rounding: XLA:CPU's results depend on the number of cores it
  # may use (taskset -c 0 moves them by ~1e-8) and on the CPU's kind (the fixture's first 10
  # steps, trained on another x86_64 host, leave val_loss 5e-10 apart on an AMD EPYC one).
  # Bit-exact resume on one machine is tests/test_reliability.py's.
  for key in ('val_loss', 'best_val_loss'):
    assert old[key] == pytest.approx(new[key], rel=1e-6), key
  assert old['steps'] == new['steps']
