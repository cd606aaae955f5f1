"""Text corpora: finding the file, the vocabulary, splits and batches.

Everything here is NumPy on the host. Batches are pure functions of
`(seed, step)`, so a resumed run sees exactly the batches that an uninterrupted
run would have seen, and the data position needs no state of its own.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
import urllib.request

import numpy as np

from seqlab.errors import SeqlabError

# Datasets that seqlab can fetch by name: URL and sha256 of the file.
DATASETS = {
    'tinyshakespeare': (
        'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/'
        'tinyshakespeare/input.txt',
        '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed',
    ),
}
VOCAB_FILENAME = 'vocab.json'


def data_dir() -> pathlib.Path:
  """Where named datasets are cached: $SEQLAB_DATA_DIR, else ~/.cache/seqlab/data."""
  env = os.environ.get('SEQLAB_DATA_DIR')
  if env:
    return pathlib.Path(env).expanduser()
  return pathlib.Path('~/.cache/seqlab/data').expanduser()


def _sha256(path: pathlib.Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve_path(dataset: str | None, path: str | None) -> pathlib.Path:
  """Returns the text file to train on: `path` if given, else the named dataset.

  A named dataset is cached under `data_dir()/<name>/input.txt`; it is
  downloaded (and checked against its sha256) only when that file is missing.
  """
  if path:
    p = pathlib.Path(path).expanduser()
    if not p.exists():
      raise SeqlabError(f'data file {p} does not exist; fix --config.data.path')
    if p.is_dir():
      raise SeqlabError(f'data path {p} is a directory; point --config.data.path at a text file')
    return p
  if not dataset:
    raise SeqlabError('no data given; set --config.data.path=FILE or --config.data.dataset=NAME')
  if dataset not in DATASETS:
    raise SeqlabError(
        f'unknown dataset {dataset!r}; known: {sorted(DATASETS)}, or set --config.data.path=FILE')
  url, sha256 = DATASETS[dataset]
  target = data_dir() / dataset / 'input.txt'
  if target.exists():
    return target
  tmp_path = None
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=60) as response:
      with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        tmp_path = pathlib.Path(tmp.name)
        shutil.copyfileobj(response, tmp)
  except OSError as e:  # urllib.error.URLError is an OSError.
    if tmp_path is not None:
      tmp_path.unlink(missing_ok=True)
    raise SeqlabError(
        f'could not download {dataset} ({e}); put the file at {target} '
        '(or set SEQLAB_DATA_DIR to a directory holding '
        f'{dataset}/input.txt)') from None
  if _sha256(tmp_path) != sha256:
    tmp_path.unlink()
    raise SeqlabError(f'download of {dataset} from {url} has the wrong sha256; put the '
                      f'right file at {target}')
  os.replace(tmp_path, target)
  return target


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
  train: np.ndarray  # int32 ids
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
                vocab: Vocabulary | None = None, max_vocab_size: int | None = None) -> Corpus:
  """Reads a file and splits it. `vocab` (from a run directory) is reused if given.

  A new vocabulary larger than `max_vocab_size` is refused: it is almost always
  a binary file that happens to decode, and the one-hot model would be huge.
  """
  raw = pathlib.Path(path).read_bytes()
  if not raw:
    raise SeqlabError(f'data file {path} is empty; give it some text')
  units = to_units(raw, mode)
  vocab_given = vocab is not None
  if vocab is None:
    vocab = Vocabulary.from_units(mode, units)
    if max_vocab_size is not None and vocab.size > max_vocab_size:
      raise SeqlabError(f'{path} has {vocab.size:,} distinct symbols, more than '
                        f'data.max_vocab_size={max_vocab_size:,} (is it a binary file?); use '
                        '--config.data.vocab=byte, or raise --config.data.max_vocab_size')
  elif vocab.mode != mode:
    raise SeqlabError(f'the run directory has a {vocab.mode!r} vocabulary but the config asks '
                      f'for {mode!r}; use a new --workdir')
  try:
    ids = vocab.encode_units(units)
  except SeqlabError as e:
    if vocab_given:
      raise SeqlabError(f'{path} does not fit the vocabulary saved in the run directory: {e}; '
                        'use a new --workdir for new data') from None
    raise
  a, b = split_bounds(len(ids), val_fraction, test_fraction)
  return Corpus(vocab, ids[:a], ids[a:b], ids[b:])


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
