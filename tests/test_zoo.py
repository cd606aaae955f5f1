"""The zoo on seqlab's one interface (configs/zoo.py, seqlab.models.registry): bad model configs
are one error line; a run resumes only as the same model; every variant is a model of about
the LSTM's size; a run made before the zoo still loads, samples and resumes
(tests/fixtures/pre_zoo_run, trained by the code of commit f95ccd1). That every registered
model trains, evaluates, resumes exactly, samples, fuses and splits over devices with the
commands the LSTM uses is tests/test_conformance.py's."""

import json
import pathlib
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import zoo
from conftest import run_command, tiny_zoo_config
from seqlab import optim
from seqlab import train
from seqlab.errors import SeqlabError
from seqlab.models import registry
from seqlab.run import load

FIXTURE = pathlib.Path(__file__).parent / 'fixtures' / 'pre_zoo_run'
# The fixture's own training command; it was stopped after step 10 of 20 (stop_at_step).
FIXTURE_ARGS = ['--config', 'configs/shakespeare.py:smoke', '--config.model.hidden_size=16',
                '--config.train.num_steps=20',
                '--config.log.checkpoint_every_steps=10', '--config.eval.every_steps=10',
                '--config.log.sample_steps=(10,)', '--config.log.novelty_num_samples=0',
                '--config.parallel.cpu_devices=1', '--config.data.test_fraction=0.0']


# --- Configuration: one error line for what cannot work.

@pytest.mark.parametrize('change, message', [
    ({'model.name': 'transformer'},
     r"^unknown model.name 'transformer'; use one of (\w+, )*char_rnn(, \w+)* \(or set model"),
    ({'model.hidden_size': 64}, r"model.name='mamba' has no field\(s\) hidden_size"),
    ({'model.d_state': 0}, 'model.d_state must be an integer >= 1'),
])
def test_bad_model_configs_are_one_error(text_file, tmp_path, change, message):
  config = tiny_zoo_config('mamba', text_file)
  for key, value in change.items():
    config.model[key.split('.')[1]] = value
  with pytest.raises(SeqlabError, match=message) as error:
    train.build(config, tmp_path / 'run')
  if 'name' in change:  # every registered model is offered
    offered = re.search(r'use one of (.*) \(or set', str(error.value)).group(1).split(', ')
    assert sorted(offered) == sorted(registry.names())


def test_a_gpt_refuses_to_carry_state_or_read_past_its_window(text_file, tmp_path):
  config = tiny_zoo_config('gpt', text_file, **{'model.context': 16})
  config.data.batching = 'streams'
  with pytest.raises(SeqlabError, match='cannot carry state past its window of 16 tokens; set '
                     '--config.data.batching=windows'):
    train.build(config, tmp_path / 'run')
  config = tiny_zoo_config('gpt', text_file, **{'model.context': 16, 'eval.window': 17})
  with pytest.raises(SeqlabError, match=r"eval.window=17 is longer than the model's context of 16"):
    train.build(config, tmp_path / 'run')
  config = tiny_zoo_config('gpt', text_file)
  config.model.num_heads = 3
  with pytest.raises(SeqlabError, match='heads'):
    train.build(config, tmp_path / 'run')


@pytest.mark.slow  # trains
def test_a_run_does_not_resume_as_another_model(text_file, tmp_path):
  train.train_and_evaluate(tiny_zoo_config('mingru', text_file, **{'train.num_steps': 2}),
                           tmp_path / 'run')
  for config, field in ((tiny_zoo_config('hawk', text_file), 'name'),
                        (tiny_zoo_config('mingru', text_file, **{'model.log_space': False}),
                         'log_space')):
    with pytest.raises(SeqlabError, match=f'holds a run with model.{field}='):
      train.build(config, tmp_path / 'run')
  # Dropout and the scan change neither shapes nor the function: a run may resume with them.
  train.build(tiny_zoo_config('mingru', text_file,
                              **{'model.dropout': 0.2, 'model.scan': 'associative'}),
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
  for variant in registry.variants():  # configs/zoo.py:<variant>, every registered model's
    config = registry.config_of(zoo.get_config(variant).model, 65)
    sizes[variant] = registry.count_params(
        jax.eval_shape(lambda c=config: registry.init_params(c, 0)))
  assert 'lstm' in sizes and all(0.75e6 < n < 0.9e6 for n in sizes.values()), sizes
  with pytest.raises(ValueError, match='needs a model first'):
    zoo.get_config('smoke')


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
