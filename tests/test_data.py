"""Data: datasets, vocabulary, splits, batches and their errors."""

import dataclasses
import hashlib
import re
import zipfile

import numpy as np
import pytest

from configs import shakespeare
from seqlab import data
from seqlab import datasets
from seqlab import token_cache
from seqlab.errors import SeqlabError


def test_vocabulary_round_trips_non_ascii_text(tmp_path):
  text = 'Привет, мир! 你好，世界。 emoji: 🙂🚀 café\nñ\tend'
  path = tmp_path / 'multi.txt'
  path.write_text(text, encoding='utf-8')
  corpus = data.load_corpus(path, 'char', 0.2, 0.0)
  vocab = corpus.vocab
  assert vocab.size == len(set(text))
  ids = np.concatenate([corpus.train, corpus.val])
  assert vocab.decode(ids) == text
  assert vocab.decode(vocab.encode('мир 🚀')) == 'мир 🚀'
  (tmp_path / 'vocab.json').write_text(vocab.to_json(), encoding='utf-8')
  assert data.Vocabulary.load(tmp_path / 'vocab.json') == vocab
  assert '🙂' in (tmp_path / 'vocab.json').read_text(encoding='utf-8')  # readable


def test_byte_vocabulary_reads_non_utf8_and_char_mode_explains(tmp_path):
  raw = bytes([0xff, 0xfe, 0x41, 0x42, 0x80]) * 20
  path = tmp_path / 'latin.bin'
  path.write_bytes(raw)
  corpus = data.load_corpus(path, 'byte', 0.1, 0.0)
  assert corpus.vocab.symbols == (0x41, 0x42, 0x80, 0xfe, 0xff)
  assert bytes(corpus.vocab.symbols[i] for i in np.concatenate([corpus.train, corpus.val])) == raw
  (tmp_path / 'vocab.json').write_text(corpus.vocab.to_json())
  assert data.Vocabulary.load(tmp_path / 'vocab.json') == corpus.vocab
  with pytest.raises(SeqlabError, match='not UTF-8.*data.vocab=byte'):
    data.load_corpus(path, 'char', 0.1, 0.0)


def test_symbols_outside_a_saved_vocabulary_are_named():
  vocab = data.Vocabulary('char', tuple(map(ord, 'abc')))
  with pytest.raises(SeqlabError, match="outside the vocabulary: \\['z'\\]"):
    vocab.encode('abz')


def test_splits_are_nanogpt_slices_independent_of_batching(text_file):
  a = data.load_corpus(text_file, 'char', 0.1, 0.0)
  n = len(text_file.read_text())
  assert len(a.train) == int(n * 0.9) and len(a.val) == n - int(n * 0.9) and len(a.test) == 0
  b = data.load_corpus(text_file, 'char', 0.1, 0.05)
  assert len(b.train) == int(n * 0.85) and len(b.test) == n - int(n * 0.95)
  np.testing.assert_array_equal(np.concatenate([b.train, b.val, b.test]),
                                np.concatenate([a.train, a.val]))
  # Splits do not depend on batch size or sequence length: batching only reads `train`.
  for batch_size, seq_len in ((2, 5), (7, 3)):
    batches = data.StreamBatches(a.train, batch_size, seq_len, seed=0)
    inputs, _, _ = batches.batch(0)
    assert set(inputs.reshape(-1)) <= set(a.train)


def test_stream_batches_continue_each_stream_and_reset_per_epoch():
  tokens = np.arange(1000, dtype=np.int32)  # token value == position
  batches = data.StreamBatches(tokens, batch_size=4, seq_len=10, seed=3)
  x0, y0, reset0 = batches.batch(0)
  x1, y1, reset1 = batches.batch(1)
  assert reset0 and not reset1
  np.testing.assert_array_equal(y0, x0 + 1)  # targets are the next symbols
  np.testing.assert_array_equal(x1, x0 + 10)  # the next batch continues every stream
  np.testing.assert_array_equal(np.diff(x0[:, 0]), batches.stream_len)  # streams are contiguous
  epoch = batches.batches_per_epoch
  assert batches.batch(epoch)[2] and not batches.batch(epoch + 1)[2]
  assert x0.max() < 1000 and batches.batch(epoch - 1)[1].max() < 1000
  # A pure function of (seed, step).
  np.testing.assert_array_equal(batches.batch(5)[0], data.StreamBatches(tokens, 4, 10, 3).batch(5)[0])


def test_window_batches_are_random_and_reproducible():
  tokens = np.arange(500, dtype=np.int32)
  batches = data.WindowBatches(tokens, batch_size=8, seq_len=12, seed=1)
  x, y, reset = batches.batch(7)
  assert reset and x.shape == (8, 12)
  np.testing.assert_array_equal(y, x + 1)
  np.testing.assert_array_equal(np.diff(x, axis=1), 1)
  np.testing.assert_array_equal(x, data.WindowBatches(tokens, 8, 12, 1).batch(7)[0])
  assert not np.array_equal(x, batches.batch(8)[0])


@pytest.mark.parametrize('n,streams,seq_len', [(100, 4, 7), (37, 16, 5), (5, 8, 3), (64, 4, 16)])
def test_eval_chunks_cover_every_prediction_once(n, streams, seq_len):
  tokens = np.arange(n, dtype=np.int32)
  seen = []
  for inputs, targets, mask in data.eval_chunks(tokens, streams, seq_len):
    assert inputs.shape == (min(streams, n - 1), seq_len)
    keep = mask > 0
    np.testing.assert_array_equal(targets[keep], inputs[keep] + 1)
    seen.extend(inputs[keep].tolist())
  assert sorted(seen) == list(range(n - 1))


def test_named_dataset_is_found_in_data_dir():
  path = datasets.resolve_path('tinyshakespeare', None)
  assert path == datasets.data_dir() / 'tinyshakespeare' / 'input.txt'
  assert datasets.sha256_of(path) == datasets.DATASETS['tinyshakespeare'].sha256


def test_failed_download_says_where_to_put_the_file(tmp_path, monkeypatch):
  monkeypatch.setenv('SEQLAB_DATA_DIR', str(tmp_path))
  missing = (tmp_path / 'nowhere.zip').as_uri()  # a URL that fails without any network
  monkeypatch.setitem(datasets.DATASETS, 'enwik8',
                      datasets.Dataset(missing, 'x', member='enwik8', vocab='byte'))
  with pytest.raises(SeqlabError) as e:
    datasets.resolve_path('enwik8', None)
  assert f'put the unzipped file at {tmp_path / "enwik8" / "input.txt"}' in str(e.value)
  assert '\n' not in str(e.value)
  assert list((tmp_path / 'enwik8').iterdir()) == []  # no partial download left behind


def test_download_is_unzipped_and_checked_against_sha256(tmp_path, monkeypatch):
  text = b'hello world ' * 100
  archive = tmp_path / 'served.zip'
  with zipfile.ZipFile(archive, 'w') as z:
    z.writestr('corpus', text)
  monkeypatch.setenv('SEQLAB_DATA_DIR', str(tmp_path / 'cache'))
  good = datasets.Dataset(archive.as_uri(), hashlib.sha256(text).hexdigest(), member='corpus')
  monkeypatch.setitem(datasets.DATASETS, 'tiny', good)
  assert datasets.resolve_path('tiny', None).read_bytes() == text
  monkeypatch.setitem(datasets.DATASETS, 'other',
                      datasets.Dataset(archive.as_uri(), '0' * 64, member='corpus'))
  with pytest.raises(SeqlabError, match='wrong sha256'):
    datasets.resolve_path('other', None)
  assert list((tmp_path / 'cache' / 'other').iterdir()) == []


def test_standard_split_is_the_datasets_own(tmp_path, monkeypatch):
  """enwik8-style: the split is given in symbols (first/next/last), not by the fractions."""
  monkeypatch.setenv('SEQLAB_DATA_DIR', str(tmp_path))
  (tmp_path / 'bytes8').mkdir()
  raw = bytes(np.random.default_rng(0).integers(0, 200, 1000).astype(np.uint8))
  (tmp_path / 'bytes8' / 'input.txt').write_bytes(raw)
  monkeypatch.setitem(datasets.DATASETS, 'bytes8', datasets.Dataset(
      'unused', None, vocab='byte', standard_split=(900, 50, 50)))
  config = shakespeare.get_config().data
  config.dataset, config.vocab = 'bytes8', 'byte'
  corpus = data.load_corpus_of(config)
  assert (len(corpus.train), len(corpus.val), len(corpus.test)) == (900, 50, 50)
  decoded = bytes(corpus.vocab.symbols[i] for i in np.concatenate(
      [corpus.train, corpus.val, corpus.test]))
  assert decoded == raw
  config.standard_split = False  # the config's fractions instead
  assert len(data.load_corpus_of(config).val) == 100
  config.standard_split, config.vocab = True, 'char'
  with pytest.raises(SeqlabError, match="standard split counts byte symbols; set "
                     "--config.data.vocab=byte"):
    data.load_corpus_of(config)


def test_corpus_is_encoded_once_and_memory_mapped(tmp_path, monkeypatch):
  """Chunked encoding (chunks cut UTF-8 characters in half here) == encoding all at once."""
  monkeypatch.setattr(token_cache, 'CHUNK_BYTES', 7)
  text = 'Привет, мир! 你好 🙂 café\n' * 50
  path = tmp_path / 'multi.txt'
  path.write_text(text, encoding='utf-8')
  corpus = data.load_corpus(path, 'char', 0.1, 0.0)
  ids = np.concatenate([corpus.train, corpus.val])
  assert isinstance(corpus.train, np.memmap) and corpus.train.dtype == np.uint8
  assert corpus.vocab.decode(ids) == text
  np.testing.assert_array_equal(ids, corpus.vocab.encode(text))
  folders = list(token_cache.cache_dir().iterdir())
  assert len(folders) == 1
  with monkeypatch.context() as patch:
    patch.setattr(token_cache, '_encode_into', lambda *a: pytest.fail('encoded again'))
    np.testing.assert_array_equal(data.load_corpus(path, 'char', 0.1, 0.0).train, corpus.train)
  path.write_text(text + 'new', encoding='utf-8')  # a changed file is encoded again
  changed = data.load_corpus(path, 'char', 0.1, 0.0)
  assert changed.vocab.decode(np.concatenate([changed.train, changed.val])) == text + 'new'
  assert len(list(token_cache.cache_dir().iterdir())) == 2


def test_id_type_is_the_smallest_that_fits(tmp_path):
  path = tmp_path / 'wide.txt'
  path.write_text(''.join(map(chr, range(0x4e00, 0x4e00 + 300))) * 3, encoding='utf-8')
  corpus = data.load_corpus(path, 'char', 0.1, 0.0)
  assert corpus.train.dtype == np.uint16 and corpus.vocab.size == 300
  with pytest.raises(SeqlabError, match='300 distinct symbols, more than data.max_vocab_size'):
    data.load_corpus(path, 'char', 0.1, 0.0, max_vocab_size=100)  # checked on the cached ids too


def test_utf8_error_names_the_byte_across_chunks(tmp_path, monkeypatch):
  monkeypatch.setattr(token_cache, 'CHUNK_BYTES', 5)
  path = tmp_path / 'bad.txt'
  path.write_bytes('abcdé'.encode() + b'xy\xffz')  # é is 2 bytes: \xff is byte 8
  with pytest.raises(SeqlabError, match='invalid start byte at byte 8'):
    data.load_corpus(path, 'char', 0.1, 0.0)


def test_unwritable_cache_encodes_in_memory(tmp_path, monkeypatch, text_file):
  blocker = tmp_path / 'file'
  blocker.write_text('')
  monkeypatch.setenv('SEQLAB_CACHE_DIR', str(blocker / 'cache'))  # cannot be created
  corpus = data.load_corpus(text_file, 'char', 0.1, 0.0)
  assert corpus.vocab.decode(np.concatenate([corpus.train, corpus.val])) == text_file.read_text()


def test_a_process_reads_only_its_rows_of_a_batch(text_file):
  corpus = data.load_corpus(text_file, 'char', 0.1, 0.0)
  for batches in (data.StreamBatches(corpus.train, 8, 16, seed=1),
                  data.WindowBatches(corpus.train, 8, 16, seed=1)):
    for step in (0, 5, 123):
      inputs, targets, reset = batches.batch(step)
      part = batches.batch(step, slice(4, 8))
      np.testing.assert_array_equal(part[0], inputs[4:])
      np.testing.assert_array_equal(part[1], targets[4:])
      assert part[2] == reset and inputs.dtype == np.int32


def test_bad_paths_and_short_corpora_give_clear_errors(tmp_path):
  with pytest.raises(SeqlabError, match='does not exist'):
    datasets.resolve_path(None, str(tmp_path / 'missing.txt'))
  with pytest.raises(SeqlabError, match='is a directory'):
    datasets.resolve_path(None, str(tmp_path))
  empty = tmp_path / 'empty.txt'
  empty.write_text('')
  with pytest.raises(SeqlabError, match='is empty'):
    data.load_corpus(empty, 'char', 0.1, 0.0)
  with pytest.raises(SeqlabError, match='fewer than one batch'):
    data.StreamBatches(np.arange(50, dtype=np.int32), batch_size=8, seq_len=10, seed=0)
  with pytest.raises(SeqlabError, match='fewer than one batch'):
    data.WindowBatches(np.arange(50, dtype=np.int32), batch_size=8, seq_len=10, seed=0)
  with pytest.raises(SeqlabError, match='unknown dataset'):
    datasets.resolve_path('wikipedia', None)
  with pytest.raises(SeqlabError, match='split fractions'):
    data.split_bounds(100, 0.6, 0.5)


@pytest.mark.slow
def test_enwik8_config_trains_on_bytes_with_the_standard_split(tmp_path, monkeypatch):
  """configs/enwik8.py:smoke end to end on a small stand-in for enwik8 (no network)."""
  from configs import enwik8  # pylint: disable=g-import-not-at-top
  from seqlab import train  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('SEQLAB_DATA_DIR', str(tmp_path / 'data'))
  (tmp_path / 'data' / 'enwik8').mkdir(parents=True)
  rng = np.random.default_rng(0)
  raw = bytes(rng.choice(np.frombuffer(b'<page> wiki text\n\xc3\xa9', np.uint8), 12_000))
  (tmp_path / 'data' / 'enwik8' / 'input.txt').write_bytes(raw)
  monkeypatch.setitem(datasets.DATASETS, 'enwik8', dataclasses.replace(
      datasets.DATASETS['enwik8'], standard_split=(10_000, 1_000, 1_000)))
  results = train.train_and_evaluate(enwik8.get_config('smoke'), tmp_path / 'run')
  vocab = data.Vocabulary.load(tmp_path / 'run' / 'vocab.json')
  assert vocab.mode == 'byte' and vocab.size == len(set(raw))
  assert results['test_bpc'] < np.log2(vocab.size)  # learned something: better than uniform
  assert 0 <= results['data_time_fraction'] < 1


def test_prefetcher_hands_out_batches_in_order_and_passes_errors_on():
  from seqlab import prefetch  # pylint: disable=g-import-not-at-top
  made = []

  def make(step):
    made.append(step)
    if step == 7:
      raise SeqlabError('bad batch 7')
    return step * 10

  fetcher = prefetch.Prefetcher(make, start=3, stop=100, depth=2)
  assert [fetcher.get(s) for s in (3, 4, 5, 6)] == [30, 40, 50, 60]
  with pytest.raises(ValueError, match='expected 7'):
    fetcher.get(9)
  with pytest.raises(SeqlabError, match='bad batch 7'):
    fetcher.get(7)
  fetcher.close()
  assert made == [3, 4, 5, 6, 7]  # nothing after the error
  ahead = prefetch.Prefetcher(lambda s: s, start=0, stop=3, depth=2)
  assert [ahead.get(s) for s in range(3)] == [0, 1, 2]
  ahead.close()
  full = prefetch.Prefetcher(lambda s: s, start=0, stop=10**9, depth=2)
  full.close()  # closes while its queue is full
  assert not full._thread.is_alive()  # pylint: disable=protected-access


def test_dataset_registry_has_the_literature_splits_and_well_formed_checksums():
  for name, spec in datasets.DATASETS.items():
    assert spec.url.startswith(('http://', 'https://')), name
    assert spec.sha256 is None or re.fullmatch('[0-9a-f]{64}', spec.sha256), name
  for name in ('enwik8', 'text8'):  # 90M / 5M / 5M of 10^8 symbols
    assert datasets.DATASETS[name].standard_split == (90_000_000, 5_000_000, 5_000_000)
  assert datasets.DATASETS['enwik8'].vocab == 'byte'
  assert {'tinyshakespeare', 'enwik8', 'text8', 'warpeace', 'linux'} <= set(datasets.DATASETS)
