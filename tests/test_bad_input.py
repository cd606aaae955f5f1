"""Bad input: one clear line naming what is wrong and how to fix it; nothing written.

Each case runs `train_and_evaluate` either on a fresh --workdir (which must not
be created) or on a copy of a finished run directory (which must stay byte for
byte the same). The command line's handling (one `error:` line, exit status 2)
is tested in test_launch.py; sampling's bad input in test_sampling.py.
"""

import pathlib
import random
import shutil

import pytest

from conftest import tiny_config
from configs import shakespeare
from seqlab import train
from seqlab.errors import SeqlabError


def _files(root: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def _smoke_config(**overrides):
  config = shakespeare.get_config('smoke')
  for key, value in overrides.items():
    group, field = key.split('.')
    config[group][field] = value
  return config


def _write_corpora(folder: pathlib.Path) -> None:
  (folder / 'empty.txt').write_text('')
  (folder / 'short.txt').write_text('too short for one batch\n' * 3)
  (folder / 'latin1.txt').write_bytes('café crème brûlée\n'.encode('latin-1') * 5000)
  rng = random.Random(0)  # valid UTF-8, but 20k distinct symbols: what a binary file looks like
  (folder / 'many_symbols.txt').write_text(
      ''.join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(200_000)), encoding='utf-8')


@pytest.mark.parametrize('overrides,message', [
    ({'data.path': '/no/such/file.txt'}, 'data file /no/such/file.txt does not exist'),
    ({'data.path': '{tmp}'}, 'is a directory; point --config.data.path at a text file'),
    ({'data.path': '{tmp}/empty.txt'}, 'is empty'),
    ({'data.path': '{tmp}/short.txt'}, 'fewer than one batch'),
    ({'data.path': '{tmp}/latin1.txt'}, r'not UTF-8 .* use --config.data.vocab=byte'),
    ({'data.path': '{tmp}/many_symbols.txt'},
     r'20,\d\d\d distinct symbols, more than data.max_vocab_size=10,000 \(is it a binary file'),
    ({'data.val_fraction': 0.0}, r'bad split fractions val=0.0'),
    ({'data.val_fraction': 0.7, 'data.test_fraction': 0.3}, r'bad split fractions'),
    ({'data.val_fraction': 1e-7}, r'the val split .* has 0 symbols'),
], ids=['missing', 'directory', 'empty', 'short', 'not-utf8', 'binary-vocab', 'no-val',
        'no-train', 'val-too-small'])
def test_bad_data_is_refused_before_the_run_directory_exists(tmp_path, overrides, message):
  _write_corpora(tmp_path)
  config = _smoke_config(**{k: v.format(tmp=tmp_path) if isinstance(v, str) else v
                            for k, v in overrides.items()})
  with pytest.raises(SeqlabError, match=message) as error:
    train.train_and_evaluate(config, tmp_path / 'run')
  assert '\n' not in str(error.value)
  assert not (tmp_path / 'run').exists()


# Config values refused whatever the run directory holds.
BAD_VALUES = [
    ({'model.hidden_size': 0}, 'model.hidden_size must be >= 1, got 0'),
    ({'model.num_layers': -1}, 'model.num_layers must be >= 1, got -1'),
    ({'train.num_steps': -5}, 'train.num_steps must be >= 1, got -5'),
    ({'data.batch_size': 0}, 'data.batch_size must be >= 1, got 0'),
    ({'data.seq_len': 0}, 'data.seq_len must be >= 1, got 0'),
    ({'model.dropout': 1.0}, r'model.dropout must be in \[0, 1\), got 1.0'),
    ({'model.dropout': -0.1}, r'model.dropout must be in \[0, 1\), got -0.1'),
    ({'model.cell': 'transformer'}, "unknown model.cell 'transformer'"),
    ({'train.on_nonfinite': 'retry'}, "train.on_nonfinite must be 'stop' or 'rollback'"),
]
BAD_VALUE_IDS = ['hidden-0', 'layers-negative', 'steps-negative', 'batch-0', 'seq-0', 'dropout-1',
                 'dropout-negative', 'cell', 'nan-policy']


@pytest.mark.parametrize('overrides,message', BAD_VALUES, ids=BAD_VALUE_IDS)
def test_bad_config_is_refused_before_the_run_directory_exists(text_file, tmp_path, overrides,
                                                               message):
  with pytest.raises(SeqlabError, match=message) as error:
    train.train_and_evaluate(tiny_config(text_file, **overrides), tmp_path / 'run')
  assert '\n' not in str(error.value)
  assert not (tmp_path / 'run').exists()


@pytest.mark.slow
@pytest.mark.parametrize('overrides,message', BAD_VALUES + [
    ({'model.num_layers': 3}, r'holds a run with model.num_layers=2, but the config says 3; '
                              r'use a new --workdir'),
    ({'model.hidden_size': 64}, r'holds a run with model.hidden_size=32'),
    ({'data.vocab': 'byte'}, r"holds a run with data.vocab='char'"),
    ({'train.num_steps': 20}, r'is at step 40, past train.num_steps=20'),
], ids=BAD_VALUE_IDS + ['other-depth', 'other-width', 'other-vocab', 'fewer-steps'])
def test_bad_config_leaves_an_existing_run_untouched(smoke_run, tmp_path, overrides, message):
  workdir = tmp_path / 'run'
  shutil.copytree(smoke_run, workdir)
  before = _files(workdir)
  with pytest.raises(SeqlabError, match=message) as error:
    train.train_and_evaluate(_smoke_config(**overrides), workdir)
  assert '\n' not in str(error.value)
  assert _files(workdir) == before


@pytest.mark.slow
def test_a_damaged_checkpoint_is_named_and_left_as_it_is(smoke_run, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(smoke_run, workdir)
  for path in (workdir / 'checkpoints' / 'latest').rglob('*'):
    if path.is_file():
      path.write_bytes(b'\x00garbage')
  before = _files(workdir)
  with pytest.raises(SeqlabError, match=r'checkpoint .*checkpoints/latest/40 is damaged \(.*\); '
                                        r'move it out of the run directory') as error:
    train.train_and_evaluate(_smoke_config(**{'train.num_steps': 60}), workdir)
  assert '\n' not in str(error.value)
  assert _files(workdir) == before


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
  path = tmp_path / 'notes.txt'
  path.write_text('my notes')
  with pytest.raises(SeqlabError, match='is a file, not a run directory'):
    train.train_and_evaluate(_smoke_config(), path)
  assert path.read_text() == 'my notes'
