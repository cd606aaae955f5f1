"""A corpus encoded once into symbol ids on disk, then memory-mapped.

`encode(path, mode)` reads the text in 16 MB chunks (twice: once for the
vocabulary, once to write the ids), so encoding enwik8 never holds more than a
chunk in memory. The ids are saved as `.npy` in the smallest unsigned integer
type that fits the vocabulary (uint8 for enwik8 and Shakespeare) and opened with
`np.load(mmap_mode='r')`: a run reads only the windows it trains on, and the
operating system shares the pages between runs.

The cache lives in $SEQLAB_CACHE_DIR (default ~/.cache/seqlab/encoded), one
folder per (file, size, mtime, vocabulary mode). It is written into a temporary
folder and renamed when complete, so a killed encoder leaves nothing half-made.
"""

import codecs
import hashlib
import json
import os
import pathlib
import shutil
import tempfile

import numpy as np

from seqlab.errors import SeqlabError

CHUNK_BYTES = 1 << 24
IDS_FILENAME = 'ids.npy'
VOCAB_FILENAME = 'vocab.json'
SOURCE_FILENAME = 'source.json'


def cache_dir() -> pathlib.Path:
  env = os.environ.get('SEQLAB_CACHE_DIR')
  return pathlib.Path(env).expanduser() if env else \
      pathlib.Path('~/.cache/seqlab/encoded').expanduser()


def _chunks_of_units(path: pathlib.Path, mode: str):
  """The file as int64 arrays of code points ('char', strict UTF-8) or byte values ('byte')."""
  decoder = codecs.getincrementaldecoder('utf-8')('strict') if mode == 'char' else None
  offset = 0
  with open(path, 'rb') as f:
    while True:
      raw = f.read(CHUNK_BYTES)
      final = not raw
      if decoder is None:
        if final:
          return
        yield np.frombuffer(raw, np.uint8).astype(np.int64)
      else:
        pending = len(decoder.getstate()[0])  # bytes of a character cut by the last chunk
        try:
          text = decoder.decode(raw, final=final)
        except UnicodeDecodeError as e:
          raise SeqlabError(f'the data is not UTF-8 ({e.reason} at byte '
                            f'{offset - pending + e.start}); use --config.data.vocab=byte for '
                            'non-UTF-8 files') from None
        if text:
          yield np.frombuffer(text.encode('utf-32-le'), np.uint32).astype(np.int64)
        if final:
          return
      offset += len(raw)


def _id_dtype(vocab_size: int):
  return next(t for t in (np.uint8, np.uint16, np.uint32) if vocab_size <= np.iinfo(t).max + 1)


def _key(path: pathlib.Path, mode: str) -> str:
  stat = path.stat()
  source = f'{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{mode}'
  return f'{path.stem[:40]}-{mode}-{hashlib.sha256(source.encode()).hexdigest()[:16]}'


def _check_vocab_size(path: pathlib.Path, size: int, max_vocab_size: int | None) -> None:
  if max_vocab_size is not None and size > max_vocab_size:
    raise SeqlabError(f'{path} has {size:,} distinct symbols, more than '
                      f'data.max_vocab_size={max_vocab_size:,} (is it a binary file?); use '
                      '--config.data.vocab=byte, or raise --config.data.max_vocab_size')


def _encode_into(path: pathlib.Path, mode: str, folder: pathlib.Path,
                 max_vocab_size: int | None) -> None:
  symbols, count = np.zeros(0, np.int64), 0
  for units in _chunks_of_units(path, mode):
    symbols = np.union1d(symbols, np.unique(units))
    count += len(units)
  if not count:
    raise SeqlabError(f'data file {path} is empty; give it some text')
  _check_vocab_size(path, len(symbols), max_vocab_size)  # before writing any ids
  ids = np.lib.format.open_memmap(folder / IDS_FILENAME, mode='w+',
                                  dtype=_id_dtype(len(symbols)), shape=(count,))
  start = 0
  for units in _chunks_of_units(path, mode):
    ids[start:start + len(units)] = np.searchsorted(symbols, units)
    start += len(units)
  ids.flush()
  del ids
  vocab = {'mode': mode, 'symbols': symbols.tolist()}
  (folder / VOCAB_FILENAME).write_text(json.dumps(vocab), encoding='utf-8')
  stat = path.stat()
  (folder / SOURCE_FILENAME).write_text(json.dumps(
      {'path': str(path.resolve()), 'size': stat.st_size, 'mtime_ns': stat.st_mtime_ns}))


def encode(path: pathlib.Path, mode: str,
           max_vocab_size: int | None = None) -> tuple[str, tuple[int, ...], np.ndarray]:
  """(mode, sorted symbols, ids as a read-only memory map) of a text file, encoded on first use.

  If the cache folder cannot be written (a read-only home), the ids are encoded
  into a temporary folder that is removed again: slower, same result.
  """
  path = pathlib.Path(path)
  folder = cache_dir() / _key(path, mode)
  if not (folder / SOURCE_FILENAME).exists():
    try:
      folder.parent.mkdir(parents=True, exist_ok=True)
      tmp = pathlib.Path(tempfile.mkdtemp(dir=folder.parent, prefix='.encoding-'))
    except OSError:
      return _encode_in_memory(path, mode, max_vocab_size)
    try:
      _encode_into(path, mode, tmp, max_vocab_size)
      try:
        os.rename(tmp, folder)
      except OSError:  # another process finished the same file first
        pass
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
  vocab = json.loads((folder / VOCAB_FILENAME).read_text(encoding='utf-8'))
  _check_vocab_size(path, len(vocab['symbols']), max_vocab_size)  # cached under another limit
  return vocab['mode'], tuple(vocab['symbols']), np.load(folder / IDS_FILENAME, mmap_mode='r')


def _encode_in_memory(path, mode, max_vocab_size):
  with tempfile.TemporaryDirectory() as tmp:
    _encode_into(path, mode, pathlib.Path(tmp), max_vocab_size)
    vocab = json.loads((pathlib.Path(tmp) / VOCAB_FILENAME).read_text(encoding='utf-8'))
    return vocab['mode'], tuple(vocab['symbols']), np.load(pathlib.Path(tmp) / IDS_FILENAME)
