"""What imports what: a sweep's own process and `seqlab.analysis.compare` never import JAX.

Each check runs in a fresh interpreter: this one has JAX loaded already (conftest).
"""

import json
import textwrap

import pytest

from conftest import run_command, write_sweep_config

HEAVY = ('jax', 'flax', 'orbax', 'optax')


def _fresh(code: str, watch=HEAVY) -> list[str]:
  """Runs `code` in a new interpreter (in the repository root); which of `watch` it imported."""
  script = textwrap.dedent(code) + textwrap.dedent(f'''
      import sys
      print('LOADED', [m for m in {tuple(watch)!r} if m in sys.modules])
  ''')
  done = run_command(code=script)
  assert done.returncode == 0, done.stderr[-3000:]
  (line,) = [l for l in done.stdout.splitlines() if l.startswith('LOADED ')]
  return eval(line[len('LOADED '):])  # pylint: disable=eval-used


def test_the_sweep_modules_and_the_commands_import_no_jax():
  assert _fresh('''
      import seqlab.command, seqlab.sweeps, seqlab.sweeps.runner, seqlab.sweeps.record
      import seqlab.sweeps.handoff, seqlab.sweeps.hparams, seqlab.sweeps.ray_tasks
      import seqlab.sweeps.trial
      import launch  # its flags; the run path imports JAX only when it runs
      from seqlab.sweeps.runner import STATUS_FILENAME
      from seqlab.sweeps.record import duration
      assert duration(3725) == '1h02m' and duration(65) == '1m05s'
  ''') == []


def test_compare_imports_no_jax():
  assert _fresh('import seqlab.analysis.compare') == []


def test_config_files_import_nothing_heavy_before_malloc_tuning():
  """`python -m seqlab.sweeps.trial` tunes malloc after importing the package `seqlab.sweeps`
  (the config files' `from seqlab import sweeps`): it must not start numpy's threads."""
  assert _fresh('import seqlab.sweeps', watch=('numpy', *HEAVY)) == []


@pytest.mark.slow
def test_a_sweep_process_runs_without_importing_jax(text_file, tmp_path):
  """`launch.py --sweep` as far as it goes without a trial to run: flags, config, trials,
  sweep.json, HParams, the summary, for a sweep whose trials are all finished."""
  config = write_sweep_config(tmp_path, text_file, "sweep.axis('seed', [0, 1])")
  sweep_dir = tmp_path / 'sweep'
  for name in ('seed=0', 'seed=1'):
    (sweep_dir / name).mkdir(parents=True)
    (sweep_dir / name / 'results.json').write_text(json.dumps({'steps': 12, 'best_val_loss': 2}))
  loaded = _fresh(f'''
      import runpy, sys
      sys.argv = ['launch.py', '--config', {str(config)!r}, '--sweep', '--fused',
                  '--workdir', {str(sweep_dir)!r}, '--config.seed=3']
      try:
        runpy.run_path('launch.py', run_name='__main__')
      except SystemExit as e:
        assert e.code == 0, e.code
  ''')
  assert loaded == []
  status = json.loads((sweep_dir / 'sweep.json').read_text())['trials']
  assert [s['status'] for s in status.values()] == ['done', 'done']
  assert list(sweep_dir.glob('events.out.tfevents.*.sweep-hparams'))
