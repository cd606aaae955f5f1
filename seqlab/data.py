"""Text corpora: the vocabulary, splits and batches.

Everything here is NumPy on the host. Files are found by `seqlab.datasets` and
encoded once into memory-mapped ids by `seqlab.token_cache`, so a 100 MB corpus
costs no memory beyond the windows being trained on. Batches are pure functions of
`(seed, step)`, so a resumed run sees exactly the batches that an uninterrupted
run would have seen, and the data position needs no state of its own.
"""

import dataclasses
import json
import pathlib

import numpy as np

from seqlab import datasets
from seqlab import token_cache
from seqlab.errors import SeqlabError

VOCAB_FILENAME = 'vocab.json'


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """Maps symbols to ids.

  mode 'char': symbols are Unicode code points of UTF-8 text.
  mode 'byte': symbols are byte values, for text that is not UTF-8.
  `symbols` is sorted, so the vocabulary of a corpus is unique.
  """
  mode: str
  symbols: tuple[int, ...]  # code points or byte values

  def __post_init__(self):
    if self.mode not in ('char', 'byte'):
      raise SeqlabError(f"unknown vocabulary mode {self.mode!r}; use 'char' or 'byte'")

  @property
  def size(self) -> int:
    return len(self.symbols)

  @classmethod
  def from_units(cls, mode: str, units: np.ndarray) -> 'Vocabulary':
    return cls(mode, tuple(int(u) for u in np.unique(units)))

  def encode_units(self, units: np.ndarray) -> np.ndarray:
    """Code points (or bytes) -> int32 ids; raises on symbols outside the vocabulary."""
    table = np.asarray(self.symbols, dtype=np.int64)
    ids = np.searchsorted(table, units)
    ids = np.minimum(ids, len(table) - 1)
    unknown = table[ids] != units
    if unknown.any():
      missing = sorted(set(units[unknown].tolist()))[:10]
      shown = [chr(u) if self.mode == 'char' else f'0x{u:02x}' for u in missing]
      raise SeqlabError(f'text has symbols outside the vocabulary: {shown}')
    return ids.astype(np.int32)

  def encode(self, text: str) -> np.ndarray:
    return self.encode_units(to_units(text.encode('utf-8'), self.mode))

  def decode(self, ids) -> str:
    units = [self.symbols[int(i)] for i in np.asarray(ids).reshape(-1)]
    if self.mode == 'char':
      return ''.join(map(chr, units))
    return bytes(units).decode('utf-8', errors='replace')

  def to_json(self) -> str:
    """Characters as strings in 'char' mode (readable), byte values as ints in 'byte' mode."""
    symbols = [chr(u) for u in self.symbols] if self.mode == 'char' else list(self.symbols)
    return json.dumps({'mode': self.mode, 'symbols': symbols}, ensure_ascii=False)

  @classmethod
  def load(cls, path: pathlib.Path) -> 'Vocabulary':
    d = json.loads(pathlib.Path(path).read_text(encoding='utf-8'))
    units = [ord(c) for c in d['symbols']] if d['mode'] == 'char' else d['symbols']
    return cls(d['mode'], tuple(units))


def to_units(raw: bytes, mode: str) -> np.ndarray:
  """Bytes of a file -> int64 code points ('char', strict UTF-8) or byte values."""
  if mode == 'byte':
    return np.frombuffer(raw, dtype=np.uint8).astype(np.int64)
  try:
    text = raw.decode('utf-8')
  except UnicodeDecodeError as e:
    raise SeqlabError(f'the data is not UTF-8 ({e.reason} at byte {e.start}); '
                      'use --config.data.vocab=byte for non-UTF-8 files') from None
  return np.frombuffer(text.encode('utf-32-le'), dtype=np.uint32).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class Corpus:
  vocab: Vocabulary
  train: np.ndarray  # ids (a read-only memory map, uint8 for most vocabularies)
  val: np.ndarray
  test: np.ndarray  # empty when there is no test split


def split_bounds(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
  """Ends of the train and val slices of n symbols: [0, a) train, [a, b) val, [b, n) test.

  With val_fraction=0.1 and no test this is nanoGPT's split (`int(n * 0.9)`).
  """
  if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
    raise SeqlabError(f'bad split fractions val={val_fraction} test={test_fraction}; need '
                      '0 < val, 0 <= test, val + test < 1')
  return int(n * (1 - val_fraction - test_fraction)), int(n * (1 - test_fraction))


def load_corpus(path: pathlib.Path, mode: str, val_fraction: float, test_fraction: float,
                vocab: Vocabulary | None = None, max_vocab_size: int | None = None,
                split_sizes: tuple[int, int, int] | None = None) -> Corpus:
  """Reads (memory-maps) a file's ids and splits it. `vocab` (from a run directory) is reused.

  `split_sizes` (train, val, test symbols: a dataset's standard split) wins over
  the fractions. A new vocabulary larger than `max_vocab_size` is refused: it is
  almost always a binary file that happens to decode, and the one-hot model
  would be huge.
  """
  if vocab is not None and vocab.mode != mode:  # before encoding a possibly large file
    raise SeqlabError(f'the run directory has a {vocab.mode!r} vocabulary but the config asks '
                      f'for {mode!r}; use a new --workdir')
  file_mode, symbols, ids = token_cache.encode(path, mode, max_vocab_size)
  own_vocab = Vocabulary(file_mode, symbols)
  if vocab is None:
    vocab = own_vocab
  elif vocab != own_vocab:  # the run's vocabulary differs from the file's: translate the ids
    try:
      table = vocab.encode_units(np.asarray(symbols, np.int64))
    except SeqlabError as e:
      raise SeqlabError(f'{path} does not fit the vocabulary saved in the run directory: {e}; '
                        'use a new --workdir for new data') from None
    ids = table[ids]
  if split_sizes is not None:
    if sum(split_sizes) > len(ids):
      raise SeqlabError(f'{path} has {len(ids):,} symbols, fewer than its standard split '
                        f'{split_sizes} needs; is the file complete?')
    a, b = split_sizes[0], split_sizes[0] + split_sizes[1]
    return Corpus(vocab, ids[:a], ids[a:b], ids[b:b + split_sizes[2]])
  a, b = split_bounds(len(ids), val_fraction, test_fraction)
  return Corpus(vocab, ids[:a], ids[a:b], ids[b:])


def load_corpus_of(data_config, vocab: Vocabulary | None = None) -> Corpus:
  """The corpus a config's `data` group names: its file, vocabulary mode and split."""
  path = datasets.resolve_path(data_config.dataset, data_config.path)
  split_sizes = datasets.standard_split(data_config.dataset, data_config.path, data_config.vocab,
                                        data_config.get('standard_split', True))
  return load_corpus(path, data_config.vocab, data_config.val_fraction,
                     data_config.test_fraction, vocab, data_config.get('max_vocab_size'),
                     split_sizes)


def _windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int):
  """(inputs, targets) int32 from windows of seq_len + 1 symbols at `starts` (reads only those
  windows of a memory-mapped corpus)."""
  window = tokens[starts[:, None] + np.arange(seq_len + 1)].astype(np.int32)
  return window[:, :-1], window[:, 1:]


class StreamBatches:
  """char-rnn batching: the split as `batch_size` contiguous streams.

  Consecutive batches continue each stream, so the recurrent state is carried
  across batches (truncated backprop through time); `reset` is True at the
  first batch of every epoch. Each epoch starts the streams at a fresh random
  offset in [0, seq_len) so that the cut points move between epochs.
  """

  def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int):
    self.tokens, self.batch_size, self.seq_len, self.seed = tokens, batch_size, seq_len, seed
    self.stream_len = (len(tokens) - seq_len) // batch_size
    self.batches_per_epoch = (self.stream_len - 1) // seq_len
    if self.batches_per_epoch < 1:
      raise SeqlabError(
          f'the train split has {len(tokens)} symbols, fewer than one batch needs '
          f'(batch_size * (seq_len + 1) + seq_len = {batch_size * (seq_len + 1) + seq_len}); '
          'use more text or a smaller data.batch_size / data.seq_len')

  def batch(self, step: int, rows: slice = slice(None)) -> tuple[np.ndarray, np.ndarray, bool]:
    """(inputs BxT, targets BxT, reset) for a global step; only `rows` of the batch
    (a process's share in a multi-host run)."""
    epoch, k = divmod(step, self.batches_per_epoch)
    offset = np.random.default_rng([self.seed, epoch]).integers(self.seq_len)
    starts = offset + np.arange(self.batch_size)[rows] * self.stream_len + k * self.seq_len
    return _windows(self.tokens, starts, self.seq_len) + (k == 0,)


class WindowBatches:
  """Random windows of seq_len + 1 symbols; the state is reset for every batch."""

  def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int):
    self.tokens, self.batch_size, self.seq_len, self.seed = tokens, batch_size, seq_len, seed
    if len(tokens) < seq_len + 1 or len(tokens) < batch_size * (seq_len + 1):
      raise SeqlabError(
          f'the train split has {len(tokens)} symbols, fewer than one batch needs '
          f'(batch_size * (seq_len + 1) = {batch_size * (seq_len + 1)}); use more text or a '
          'smaller data.batch_size / data.seq_len')
    self.batches_per_epoch = max(1, len(tokens) // (batch_size * seq_len))

  def batch(self, step: int, rows: slice = slice(None)) -> tuple[np.ndarray, np.ndarray, bool]:
    rng = np.random.default_rng([self.seed, step])
    starts = rng.integers(0, len(self.tokens) - self.seq_len, size=self.batch_size)[rows]
    return _windows(self.tokens, starts, self.seq_len) + (True,)


def make_batches(mode: str, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int):
  if mode == 'streams':
    return StreamBatches(tokens, batch_size, seq_len, seed)
  if mode == 'windows':
    return WindowBatches(tokens, batch_size, seq_len, seed)
  raise SeqlabError(f"unknown data.batching {mode!r}; use 'streams' or 'windows'")


def eval_chunks(tokens: np.ndarray, num_streams: int, seq_len: int):
  """Every next-symbol prediction of a split, as chunks for a carried-state pass.

  The split is cut into `num_streams` contiguous streams (padded at the end);
  yields (inputs, targets, mask) of shape (num_streams, seq_len) in order, so
  that carrying the state from chunk to chunk reads each stream left to right.
  Every one of the len(tokens) - 1 predictions appears exactly once with mask 1.
  """
  n = len(tokens) - 1
  if n < 1:
    raise SeqlabError('an evaluation split has fewer than 2 symbols; use a larger split fraction')
  num_streams = min(num_streams, n)
  per_stream = -(-n // num_streams)
  num_chunks = -(-per_stream // seq_len)
  padded = num_streams * num_chunks * seq_len
  inputs = np.zeros(padded, np.int32)
  targets = np.zeros(padded, np.int32)
  mask = np.zeros(padded, np.float32)
  # Stream s holds predictions [s * per_stream, (s + 1) * per_stream).
  shape = (num_streams, num_chunks * seq_len)
  index = np.arange(padded).reshape(shape)[:, :per_stream]
  pos = (np.arange(num_streams)[:, None] * per_stream + np.arange(per_stream)).reshape(-1)
  valid = pos < n
  flat = index.reshape(-1)[valid]
  inputs[flat], targets[flat], mask[flat] = tokens[pos[valid]], tokens[pos[valid] + 1], 1.0
  inputs, targets, mask = (a.reshape(shape) for a in (inputs, targets, mask))
  for c in range(num_chunks):
    sl = slice(c * seq_len, (c + 1) * seq_len)
    yield inputs[:, sl], targets[:, sl], mask[:, sl]


def window_chunks(tokens: np.ndarray, window: int, batch: int, stride: int | None = None):
  """Every next-symbol prediction of a split, in windows that are each read from the zero state.

  Window k covers predictions [k * stride, k * stride + window), `batch` windows per chunk.
  stride None (= window): non-overlapping windows from offset 0 of the split, nanoGPT's
  kind; the last one is partial. stride < window: sliding windows, each scoring only the
  predictions the previous one did not (the first scores all of its own), so every prediction
  past the first window sees at least window - stride symbols of context. Either way every
  one of the len(tokens) - 1 predictions has mask 1 exactly once. Yields (inputs, targets,
  mask) of shape (batch, window); windows that pad the last chunk are all mask 0.
  """
  n = len(tokens) - 1
  if n < 1:
    raise SeqlabError('an evaluation split has fewer than 2 symbols; use a larger split fraction')
  stride = stride or window
  if not 0 < stride <= window:
    raise ValueError(f'stride {stride} must be in [1, window={window}]')
  num_windows = 1 + max(0, -(-(n - window) // stride))
  num_windows = -(-num_windows // batch) * batch  # whole chunks
  starts = np.arange(num_windows)[:, None] * stride
  pos = starts + np.arange(window)  # (windows, window): the prediction each position makes
  first_scored = np.where(starts == 0, 0, starts - stride + window)  # the previous one's end
  mask = ((pos < n) & (pos >= first_scored)).astype(np.float32)
  pos = np.minimum(pos, n - 1)  # padding reads some valid symbol; its mask is 0
  inputs, targets = tokens[pos].astype(np.int32), tokens[pos + 1].astype(np.int32)
  for c in range(0, num_windows, batch):
    yield inputs[c:c + batch], targets[c:c + batch], mask[c:c + batch]
