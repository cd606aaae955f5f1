"""The conformance suite: every variant the registry holds (`registry.variants()`) follows the
model contract (seqlab/models/declaration.py, docs/zoo.md "Adding a model"). No model is named
here: a new model is checked as soon as its module registers it. Test ids are variant names.

Model-level, each variant at its declared 'tiny' size with random parameters of its shapes,
vocabulary 11, batch 3, random tokens of length T = 12 (a model with a window: at most that
window, so every check stays within it); fast tier unless marked:
  the carry   real arrays (float32 or int32, no complex), batch-first, all zeros from
              init_carry; a forward returns a carry of the same structure, shapes and dtypes
  causality   changing token t leaves the logits before t unchanged, bit for bit
  chunks      chunks of 4 with the carry passed along == one sequence (logits and carry)
  one token   one token at a time (the sampling path: a lax.scan of T=1 calls) == the sequence
  dropout     a traced dropout_rate under jit: train=True at 0.5 changes the logits, at 0.0
              equals train=False; train=False is deterministic (whatever the rate and key)
  equivalent  (slow) each value of each field the declaration calls `equivalent` (the scans'
              two forms, char_rnn's two backward passes) gives the same values and gradients
  neurons     a model with `neuron_states` records states of those sizes that are the carry
              after each symbol; a model without raises a SeqlabError
  declaration its matrices are parameters and hold most of them (0.8M size, traced only);
              describe is one line; state_size(config, tokens) is a positive int
The forward checks of a variant read one compiled function (`_compiled_probe`, run three
times), the gradients of `equivalent` one per form.

Run-level (slow tier), each variant's `configs/zoo.py:<variant>,smoke` made tinier
(conftest.tiny_zoo_config): a reference run, also stopped and resumed (exactly the same);
sampled twice with the same seed (the same text); evaluated under both protocols (seqlab.score
of its checkpoints gives them again); its neurons recorded; two fused trials (learning rate and
dropout) equal to each trained alone; two CPU devices equal to one; a bf16 run that trains and
is sampled in float32. The runs of a variant are trained once (`_Runs`) and shared by its
checks, which run together (a module-scoped parametrised fixture); a persistent compilation
cache, for this module only, lets a run that compiles the same program as another load it.
"""

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import final_params, random_params, scalars, start_command, tiny_zoo_config
from conftest import write_corpus
from seqlab import evaluate as evaluate_lib
from seqlab import interrupts
from seqlab import train
from seqlab.analysis import neurons
from seqlab.analysis import sample as sample_lib
from seqlab.analysis import score as score_lib
from seqlab.errors import SeqlabError
from seqlab.models import registry
from seqlab.run import load
from seqlab.sweeps import declare as sweep
from seqlab.sweeps import fused

VARIANTS = registry.variants()  # {variant: (Model, Variant)}: every registered model's
NAMES = list(VARIANTS)
V, B, T = 11, 3, 12  # batch 3: no axis of a tiny model's carry is 3 long by chance


def _declaration(variant):
  return VARIANTS[variant][0]


def _tiny_config(variant: str):
  """The variant's model dataclass at its declared 'tiny' size."""
  return registry.config_of(registry.group_of(variant, 'tiny'), V)


@functools.cache
def _model(variant: str):
  """(config, module, params) of the variant's tiny size; random parameters of its shapes
  (conftest.random_params: traced, not compiled; the declared init is the runs')."""
  config = _tiny_config(variant)
  module = registry.module_of(config)
  params = random_params(module.init, jnp.zeros((1, 1), jnp.int32), registry.init_carry(config, 1))
  return config, module, params


def _length(config) -> int:
  """T, or the window of a model that has one (every check stays within it)."""
  window = registry.window(config)
  return T if window is None else min(T, window)


def _tokens(config, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, V, (B, _length(config))), jnp.int32)


def _float_leaves(tree):
  return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]


def _chunk(length: int) -> int:
  """The length of the chunks a sequence is cut into (equal ones: one traced call in a scan)."""
  return next((c for c in (4, 3, 2) if length % c == 0 and c < length), 1)


# XLA's optimisations off (LLVM -O0): a tiny model's forwards compile in about half the time,
# and every check compares numbers of one compiled function (or of two, in float32 tolerances).
FAST_COMPILE = {'xla_backend_optimization_level': 0}


@functools.cache
def _compiled_probe(variant: str):
  """One compiled function that runs every forward a model-level check reads: the sequence
  (train=False, with a dropout rate and key), in chunks and one token at a time (each a
  lax.scan, the carry passed along), with dropout (train=True, a traced rate), and, for a model
  with neuron_states, recorded (batch 1)."""
  config, module, _ = _model(variant)
  records = _declaration(variant).neuron_states is not None
  length = _length(config)
  chunk = _chunk(length)

  def probe(params, tokens, eval_rate, train_rate, key):
    apply = lambda tokens, carry, **kw: module.apply({'params': params}, tokens, carry, **kw)
    zero = registry.init_carry(config, B)
    logits, carry = apply(tokens, zero, train=False, dropout_rate=eval_rate,
                          rngs={'dropout': key})

    def chunk_step(carry, tokens_BxC):
      out, carry = apply(tokens_BxC, carry)
      return carry, (out, carry)
    chunks_NxBxC = jnp.swapaxes(tokens.reshape(B, length // chunk, chunk), 0, 1)
    carry_chunks, (logits_chunks, carries_chunks) = jax.lax.scan(chunk_step, zero, chunks_NxBxC)

    def token_step(carry, token_B):
      out, carry = apply(token_B[:, None], carry)
      return carry, (out[:, 0], carry)
    carry_steps, (logits_steps, carries) = jax.lax.scan(token_step, zero, tokens.T)
    dropped, _ = apply(tokens, zero, train=True, dropout_rate=train_rate, rngs={'dropout': key})
    out = {'logits': logits, 'carry': carry, 'carry_chunks': carry_chunks,
           'chunks': jnp.swapaxes(logits_chunks, 0, 1).reshape(logits.shape),
           'carry_first': jax.tree.map(lambda x: x[0], carries_chunks),
           'steps': jnp.swapaxes(logits_steps, 0, 1), 'carry_steps': carry_steps,
           'carries': carries, 'dropped': dropped}
    if records:
      _, variables = module.apply({'params': params}, tokens[:1], registry.init_carry(config, 1),
                                  mutable=['intermediates'])
      out['intermediates'] = variables['intermediates']
    return out
  return jax.jit(probe, compiler_options=FAST_COMPILE)


@functools.cache
def _probe(variant: str) -> dict:
  """The probe's outputs (host arrays) on the tokens, with dropout at rate 0.5; 'changed': its
  logits with token t changed; 'again': its logits with another evaluation rate and key and
  'undropped' at training rate 0 (three runs of the one compiled function)."""
  config, _, params = _model(variant)
  probe = _compiled_probe(variant)
  tokens = _tokens(config)
  changed_at = tokens.shape[1] // 2
  changed = tokens.at[:, changed_at].set((tokens[:, changed_at] + 1) % V)
  key, other_key = jax.random.split(jax.random.PRNGKey(1))
  run = lambda tokens, eval_rate, train_rate, key: jax.device_get(probe(
      params, tokens, jnp.float32(eval_rate), jnp.float32(train_rate), key))
  out = run(tokens, 0.5, 0.5, key)
  again = run(tokens, 0.25, 0.0, other_key)
  return {**out, 'changed': run(changed, 0.5, 0.5, key)['logits'], 'changed_at': changed_at,
          'again': again['logits'], 'undropped': again['dropped'], 'tokens': np.asarray(tokens),
          'zero': jax.device_get(registry.init_carry(config, B))}


def _close(got, want, rtol=1e-5, atol=1e-5):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=atol), got, want)


def _close_to_scale(got, want, rtol=1e-4, scale=1e-5):
  """Leaf by leaf, within rtol or `scale` x the leaf's largest |value| (an entry that cancels
  to near zero keeps the rounding of the large terms it sums: gradients)."""
  assert jax.tree.structure(got) == jax.tree.structure(want)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=rtol, atol=scale * max(float(np.abs(b).max()), 1e-3)), got, want)


def _shapes_and_dtypes(tree):
  return jax.tree.map(lambda x: (tuple(x.shape), jnp.dtype(x.dtype)), tree)


# --- The carry.

@pytest.mark.parametrize('variant', NAMES)
def test_the_zero_carry_is_real_batch_first_arrays_of_zeros(variant):
  config, _, _ = _model(variant)
  for batch in (B, 1):
    leaves = jax.tree.leaves(registry.init_carry(config, batch))
    assert leaves, 'a carry has at least one array'
    for leaf in leaves:
      assert isinstance(leaf, jax.Array), type(leaf)
      assert jnp.dtype(leaf.dtype) in (jnp.float32, jnp.int32), leaf.dtype  # no complex
      assert leaf.ndim >= 1 and leaf.shape[0] == batch, leaf.shape  # batch-first
      assert not np.any(np.asarray(leaf)), 'init_carry is all zeros'


@pytest.mark.parametrize('variant', NAMES)
def test_a_forward_returns_a_carry_like_the_one_it_took(variant):
  out = _probe(variant)
  config, module, _ = _model(variant)
  assert module.config == config and registry.of(config) is _declaration(variant)
  assert out['logits'].shape == (B, _length(config), V) and out['logits'].dtype == np.float32
  want = _shapes_and_dtypes(out['zero'])
  for key in ('carry', 'carry_first', 'carry_chunks', 'carry_steps'):
    assert _shapes_and_dtypes(out[key]) == want, key
  assert all(np.isfinite(x).all() for x in _float_leaves(out['carry'])) and \
      np.isfinite(out['logits']).all()


# --- The function a model computes.

@pytest.mark.parametrize('variant', NAMES)
def test_causal_changing_token_t_leaves_earlier_logits_unchanged(variant):
  out = _probe(variant)  # the same compiled forward on both inputs: bit for bit
  t = out['changed_at']
  np.testing.assert_array_equal(out['changed'][:, :t], out['logits'][:, :t])
  assert np.abs(out['changed'][:, t] - out['logits'][:, t]).max() > 1e-6  # it reads token t


@pytest.mark.parametrize('variant', NAMES)
def test_chunks_with_the_carry_equal_one_sequence(variant):
  out = _probe(variant)
  _close(out['chunks'], out['logits'])
  _close(out['carry_chunks'], out['carry'])


@pytest.mark.parametrize('variant', NAMES)
def test_one_token_at_a_time_equals_the_full_forward(variant):
  """The sampling path (seqlab.generate): T=1 calls in a lax.scan, the carry passed along."""
  out = _probe(variant)
  _close(out['steps'], out['logits'])
  _close(out['carry_steps'], out['carry'])


@pytest.mark.parametrize('variant', NAMES)
def test_a_traced_dropout_rate_works_under_jit_and_evaluation_is_deterministic(variant):
  out = _probe(variant)
  assert np.abs(out['dropped'] - out['logits']).max() > 1e-3  # rate 0.5, train=True: applied
  np.testing.assert_allclose(out['undropped'], out['logits'], rtol=1e-6, atol=1e-6)  # rate 0
  # train=False: no dropout, whatever the rate and key (0.5 and a key, 0.25 and another key).
  np.testing.assert_array_equal(out['again'], out['logits'])


# (variant, field, value): every other value of each `equivalent` field than the tiny size's.
EQUIVALENT = [pytest.param(variant, field, value, id=f'{variant}-{field}={value}')
              for variant in NAMES
              for field, values in _declaration(variant).equivalent.items() for value in values
              if value != getattr(_tiny_config(variant), field)]


@functools.cache
def _loss_and_grads(variant: str, field: str, value):
  """(loss, logits, carry, gradients wrt the parameters) with `field` set to `value`."""
  config, _, params = _model(variant)
  module = registry.module_of(dataclasses.replace(config, **{field: value}))
  tokens = _tokens(config, seed=3)

  def loss_fn(params):
    logits, carry = module.apply({'params': params}, tokens, registry.init_carry(config, B))
    loss = jnp.sum(jnp.sin(logits)) + sum(jnp.sum(x ** 2) for x in _float_leaves(carry))
    return loss, (logits, carry)
  grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True), compiler_options=FAST_COMPILE)
  (loss, (logits, carry)), grads = grad(params)
  return jax.device_get((loss, logits, carry, grads))


@pytest.mark.slow  # a compiled gradient per form: 1.5-5 s each
@pytest.mark.parametrize('variant, field, value', EQUIVALENT)
def test_equivalent_forms_give_the_same_values_and_gradients(variant, field, value):
  """Each value of an `equivalent` field against the tiny size's own value."""
  config, _, _ = _model(variant)
  loss, logits, carry, grads = _loss_and_grads(variant, field, value)
  ref_loss, ref_logits, ref_carry, ref_grads = _loss_and_grads(variant, field,
                                                               getattr(config, field))
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  _close(logits, ref_logits)
  _close(carry, ref_carry)
  _close_to_scale(grads, ref_grads)
  assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(grads))


# --- Neurons: the recorded states are the carry after each symbol.

@pytest.mark.parametrize('variant', NAMES)
def test_recorded_states_are_the_carry_after_each_symbol(variant):
  config, _, _ = _model(variant)
  if _declaration(variant).neuron_states is None:
    with pytest.raises(SeqlabError, match='has none'):
      registry.neuron_states(config)
    with pytest.raises(SeqlabError, match='has none'):
      registry.recorded_states(config, {})
    return
  sizes = registry.neuron_states(config)
  assert sizes and all(isinstance(n, int) and n > 0 for n in sizes.values()), sizes
  out = _probe(variant)  # recorded on row 0 of the tokens alone, as seqlab.neurons does
  recorded = registry.recorded_states(config, out['intermediates'])
  layers = sorted({layer for layer, _, _ in recorded})
  assert layers == list(range(getattr(config, 'num_layers', len(layers))))
  assert [(layer, kind) for layer, kind, _ in recorded] == \
      [(layer, kind) for layer in layers for kind in sizes]
  # The carry after each of the T symbols, row 0 (the one-token path of _probe).
  carries = out['carries']
  for layer in layers:
    per_layer = carries[layer] if isinstance(carries, (tuple, list)) else carries
    leaves = [np.asarray(x)[:, 0] for x in jax.tree.leaves(per_layer)]  # T x ...
    matched = []
    for _, kind, values_NxU in (r for r in recorded if r[0] == layer):
      values_NxU = np.asarray(values_NxU)
      assert values_NxU.shape == (out['tokens'].shape[1], sizes[kind]), (layer, kind)
      same = [i for i, leaf in enumerate(leaves) if leaf.shape == values_NxU.shape and
              np.allclose(leaf, values_NxU, rtol=1e-5, atol=1e-6)]
      assert same, f'layer {layer} {kind}: no leaf of the carry holds the recorded states'
      matched.append(same)
    assert len({tuple(m) for m in matched}) == len(matched), 'two kinds record one leaf'


# --- The declaration.

@pytest.mark.parametrize('variant', NAMES)
def test_the_declared_matrices_are_those_of_the_parameters(variant):
  """At the 0.8M size (parameters traced, not made): every declared matrix is the size of a
  parameter, and they hold more than half of the parameters and no more than all of them."""
  config = registry.config_of(registry.group_of(variant, '0.8M'), 65)
  params = jax.eval_shape(lambda: registry.init_params(config, 0))
  count = registry.count_params(params)
  sizes = {leaf.size for leaf in jax.tree.leaves(params)}
  matrices = _declaration(variant).matrices(config)
  assert matrices
  for name, inputs, outputs in matrices:
    assert isinstance(name, str) and inputs >= 1 and outputs >= 1, (name, inputs, outputs)
    assert inputs * outputs in sizes, f'{name} ({inputs} x {outputs}) is no parameter'
  total = sum(inputs * outputs for _, inputs, outputs in matrices)
  assert count / 2 < total <= count, (total, count)


@pytest.mark.parametrize('variant', NAMES)
def test_describe_is_one_line(variant):
  config, _, _ = _model(variant)
  words = registry.describe(config)
  assert isinstance(words, str) and words.strip() and '\n' not in words


@pytest.mark.parametrize('variant', NAMES)
def test_state_size_is_a_positive_int(variant):
  config, _, _ = _model(variant)
  declared = [_declaration(variant).state_size(config, tokens) for tokens in (1, T, 4096)]
  sizes = [registry.state_size(config, tokens) for tokens in (1, T, 4096)]
  assert sizes == declared and all(isinstance(n, int) and n > 0 for n in sizes), declared
  assert sizes == sorted(sizes), sizes  # more context never needs less state


# --- Runs: each variant's configs/zoo.py:<variant>,smoke, tinier (conftest.tiny_zoo_config).

PRIME, LENGTH = 'ANNA:', 40
DEVICES_CHECK = 'test_two_cpu_devices_train_as_one'


class _Runs:
  """The runs of one variant, each trained the first time a check asks for it.

  Two trials (learning rates 3e-3 and 2e-2; dropout 0 and 0.3 where the model has dropout):
  trial 0 trained alone is the reference run; it is also trained stopped after step 5 and
  resumed, on two CPU devices (a process of its own, started at once when that check is
  selected, so that it trains beside this process), and with bf16 matmuls; both trials fused.
  """

  def __init__(self, variant: str, root, start_devices: bool):
    self.variant, self.root = variant, root
    self.text_file = write_corpus(root / 'corpus.txt')
    base = tiny_zoo_config(variant, self.text_file)
    axes = [sweep.axis('optim.learning_rate', [3e-3, 2e-2])]
    if 'dropout' in base.model:  # fused trials that differ in a traced dropout rate
      base.model.dropout = 0.0
      axes.append(sweep.axis('model.dropout', [0.0, 0.3]))
    self.trials = sweep.make_trials(base, sweep.zipped(*axes))
    self.config = self.trials[0].config
    self._done = {}
    self._devices = self._start_devices(2) if start_devices else None

  def _once(self, name, make):
    if name not in self._done:
      self._done[name] = make()
    return self._done[name]

  def alone(self, i: int = 0):
    """(workdir, results) of trial i trained alone (trial 0: the reference run)."""
    workdir = self.root / 'alone' / self.trials[i].name
    return self._once(('alone', i), lambda: (
        workdir, train.train_and_evaluate(self.trials[i].config, workdir)))

  def split(self):
    """(workdir, results) of the reference run stopped after step 5, then resumed."""
    def make():
      workdir = self.root / 'split'
      assert train.train_and_evaluate(self.config, workdir, stop_at_step=5) is None
      return workdir, train.train_and_evaluate(self.config, workdir)
    return self._once('split', make)

  def fused(self):
    """{trial name: workdir} of both trials trained as one fused program."""
    def make():
      pairs = [(t, self.root / 'fused' / t.name) for t in self.trials]
      assert fused.train_fused(pairs, interrupts.StopRequest()) == {}
      return {t.name: workdir for t, workdir in pairs}
    return self._once('fused', make)

  def bf16(self):
    """(workdir, results) of the reference run with model.matmul_dtype='bfloat16'."""
    def make():
      config = self.config.copy_and_resolve_references()
      config.model.matmul_dtype = 'bfloat16'
      workdir = self.root / 'bf16'
      return workdir, train.train_and_evaluate(config, workdir)
    return self._once('bf16', make)

  def _start_devices(self, count: int):
    config_file = self.root / 'reference.py'
    config_file.write_text(
        'import json\nfrom ml_collections import config_dict\n'
        'def get_config(arg=None):\n'
        f'  return config_dict.ConfigDict(json.loads({self.config.to_json()!r}))\n')
    workdir = self.root / f'devices-{count}'
    with open(self.root / 'devices.out', 'w') as out, open(self.root / 'devices.err', 'w') as err:
      return workdir, start_command('--config', config_file, '--workdir', workdir,
                                    f'--config.parallel.cpu_devices={count}', stdout=out,
                                    stderr=err)

  def devices(self):
    """(stdout, results) of the reference run on 2 CPU devices (the process started at once)."""
    def make():
      workdir, process = self._devices or self._start_devices(2)
      process.wait(timeout=600)
      stderr = (self.root / 'devices.err').read_text()
      assert process.returncode == 0, stderr[-3000:]
      return ((self.root / 'devices.out').read_text(),
              json.loads((workdir / 'results.json').read_text()))
    return self._once('devices', make)

  def close(self):
    if self._devices is not None and self._devices[1].poll() is None:  # its check did not run
      self._devices[1].kill()
      self._devices[1].wait()


@pytest.fixture(scope='module')
def _compilation_cache(tmp_path_factory):
  """JAX's persistent compilation cache, for this module's runs only: a run that resumes, or
  trains the same program again (the eval step of every trial, the init of every run), loads
  what the first one compiled instead of compiling it anew (XLA compiles ~80% of a tiny run's
  time). Turned off again after the module."""
  from jax._src import compilation_cache  # pylint: disable=g-import-not-at-top
  options = ('jax_compilation_cache_dir', 'jax_persistent_cache_min_compile_time_secs',
             'jax_persistent_cache_min_entry_size_bytes')
  before = {name: getattr(jax.config, name) for name in options}
  for name, value in zip(options, (str(tmp_path_factory.mktemp('jax-cache')), 0, 0)):
    jax.config.update(name, value)
  compilation_cache.reset_cache()
  yield
  for name, value in before.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()


@pytest.fixture(scope='module', params=NAMES)
def runs(request, tmp_path_factory, _compilation_cache):
  """The variant's _Runs: module-scoped and parametrised, so pytest runs every check of one
  variant before the next variant's, and each variant's runs are trained once."""
  variant = request.param
  selected = any(getattr(item, 'originalname', None) == DEVICES_CHECK and
                 getattr(item, 'callspec', None) is not None and
                 item.callspec.params.get('runs') == variant for item in request.session.items)
  made = _Runs(variant, tmp_path_factory.mktemp(f'conformance-{variant}'), selected)
  yield made
  made.close()


@pytest.mark.slow
def test_a_run_stopped_and_resumed_is_the_run_trained_at_once(runs):
  workdir, whole = runs.alone()
  split_dir, resumed = runs.split()
  for key in ('val_loss', 'val_loss_stream', 'val_loss_windows', 'best_val_loss', 'best_step',
              'steps'):
    assert resumed[key] == whole[key], key
  assert scalars(split_dir, 'train/loss') == scalars(workdir, 'train/loss')
  assert whole['val_loss'] < scalars(workdir, 'train/loss')[0][1]  # it learned


@pytest.mark.slow
def test_a_run_is_evaluated_under_both_protocols_as_scoring_its_checkpoints_does(runs):
  """results.json has both protocols; seqlab.score of the last checkpoint gives them again,
  and of the best checkpoint its best_val_loss (the stream protocol, the primary one)."""
  workdir, results = runs.alone()
  assert results['eval_protocol'] == 'stream'
  latest = score_lib.score(load.load_run(workdir, 'latest'))
  assert latest['step'] == results['steps']
  assert latest['stream']['chars'] == latest['windows']['chars'] == latest['chars'] > 0
  for protocol in evaluate_lib.PROTOCOLS:
    assert np.isfinite(results[f'val_loss_{protocol}']), protocol
    assert latest[protocol]['loss'] == pytest.approx(results[f'val_loss_{protocol}'],
                                                     rel=1e-6), protocol
  assert latest['windows']['loss'] != pytest.approx(latest['stream']['loss'], rel=1e-6)
  best = score_lib.score(load.load_run(workdir, 'best'))
  assert best['step'] == results['best_step']
  assert best['stream']['loss'] == pytest.approx(results['best_val_loss'], rel=1e-6)


@pytest.mark.slow
def test_the_same_seed_samples_the_same_text(runs):
  workdir, _ = runs.alone()
  run = load.load_run(workdir)
  first, again, other = (sample_lib.generate(run, PRIME, LENGTH, 2, 1.0, 0, False, seed)
                         for seed in (2, 2, 3))
  assert first == again
  assert first != other
  for text in first:  # past a model's window: ANNA: and 40 symbols
    assert text.startswith(PRIME) and len(text) == len(PRIME) + LENGTH, text


@pytest.mark.slow
def test_a_run_records_its_neurons_or_says_it_has_none(runs):
  workdir, _ = runs.alone()
  run = load.load_run(workdir)
  text = runs.text_file.read_text()[:60]
  if _declaration(runs.variant).neuron_states is None:
    with pytest.raises(SeqlabError, match='has none'):
      neurons.record(run, text)
    return
  recording = neurons.record(run, text)
  sizes = registry.neuron_states(run.model.config)
  assert recording.activations.shape == (len(text), len(recording.units))
  assert np.isfinite(recording.activations).all()
  units = {}
  for unit in recording.units:  # layer/kind/index
    layer, kind, _ = unit.split('/')
    units[layer, kind] = units.get((layer, kind), 0) + 1
  assert {kind for _, kind in units} == set(sizes)
  assert all(count == sizes[kind] for (_, kind), count in units.items()), units


@pytest.mark.slow
def test_fused_trials_train_as_each_trained_alone(runs):
  fused_dirs = runs.fused()
  for i, trial in enumerate(runs.trials):
    alone_dir, alone = runs.alone(i)
    together = json.loads((fused_dirs[trial.name] / 'results.json').read_text())
    for key in ('val_loss', 'val_loss_windows', 'best_val_loss'):
      assert together[key] == pytest.approx(alone[key], rel=2e-5), (trial.name, key)
    np.testing.assert_allclose([v for _, v in scalars(fused_dirs[trial.name], 'train/loss')],
                               [v for _, v in scalars(alone_dir, 'train/loss')], rtol=2e-5)
    # Batched matmuls round differently, and training amplifies that where Adam scales a
    # gradient of rounding size to a step of about the learning rate, so the parameters are
    # compared with how far training moved them: per leaf, |fused - alone| / |alone - init|
    # measured 3e-5 at most (GLA: 1.9e-4, lr 2e-2); a trial trained with another's learning
    # rate or dropout is O(1) off.
    fused_params, alone_params = final_params(fused_dirs[trial.name]), final_params(alone_dir)
    init = registry.init_params(load.load_run(alone_dir).model.config, trial.config.seed)
    assert jax.tree.structure(fused_params) == jax.tree.structure(alone_params) == \
        jax.tree.structure(init)
    for (path, start), got, want in zip(jax.tree_util.tree_flatten_with_path(init)[0],
                                        jax.tree.leaves(fused_params),
                                        jax.tree.leaves(alone_params)):
      got, want, start = (np.asarray(x, np.float64) for x in (got, want, start))
      off, moved = np.linalg.norm(got - want), np.linalg.norm(want - start)
      assert off <= 1e-3 * moved, (trial.name, jax.tree_util.keystr(path), off, moved)
  a, b = (json.loads((fused_dirs[t.name] / 'results.json').read_text()) for t in runs.trials)
  assert a['val_loss'] != b['val_loss']  # the trials' settings reach the fused step


@pytest.mark.slow
def test_a_bf16_run_trains_and_is_sampled_in_float32(runs):
  if 'matmul_dtype' not in runs.config.model:
    pytest.skip('the model has no model.matmul_dtype')
  workdir, results = runs.bf16()
  _, reference = runs.alone()
  assert np.isfinite(results['val_loss']) and results['val_loss'] != reference['val_loss']
  assert results['val_loss'] < scalars(workdir, 'train/loss')[0][1]  # it learned
  assert results['val_loss'] == pytest.approx(reference['val_loss'], rel=0.05)
  assert load.load_config(workdir).model.matmul_dtype == 'bfloat16'
  run = load.load_run(workdir)  # analysed in float32 by default
  assert run.model.config.matmul_dtype == 'float32'
  (text,) = sample_lib.generate(run, PRIME, LENGTH, 1, 1.0, 0, False, 0)
  assert text.startswith(PRIME) and len(text) == len(PRIME) + LENGTH


@pytest.mark.slow
def test_two_cpu_devices_train_as_one(runs):
  """The batch and the carried state split over two devices (a process of its own) give the
  reference run's numbers (one device, this process). Last: that process trained meanwhile."""
  stdout, results = runs.devices()
  assert '2 cpu device' in stdout
  _, reference = runs.alone()
  for key in ('val_loss', 'val_loss_windows', 'best_val_loss'):
    assert results[key] == pytest.approx(reference[key], rel=1e-5), key
