"""Named corpora: where to download them, their checksums and their standard splits.

A named dataset is cached as `$SEQLAB_DATA_DIR/<name>/input.txt` (default
`~/.cache/seqlab/data`); it is downloaded (and unzipped, and checked against
its sha256) only when that file is missing. Offline, put the file there by hand.
"""

import dataclasses
import hashlib
import os
import pathlib
import shutil
import tempfile
import urllib.request
import zipfile

from seqlab.errors import SeqlabError


@dataclasses.dataclass(frozen=True)
class Dataset:
  url: str
  sha256: str | None  # of the text file (not of the archive); None: no published checksum
  member: str | None = None  # the file inside the zip archive at `url`
  vocab: str = 'char'  # the vocabulary mode the standard split counts in
  # (train, val, test) sizes in symbols, as the literature uses them; None: config fractions.
  standard_split: tuple[int, int, int] | None = None
  about: str = ''


_MAHONEY = 'http://mattmahoney.net/dc/'
_KARPATHY = 'https://cs.stanford.edu/people/karpathy/char-rnn/'
DATASETS = {
    'tinyshakespeare': Dataset(
        'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/'
        'input.txt', '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed',
        about="char-rnn's 1.1 MB of Shakespeare (the post's first corpus)"),
    # The first 10^8 bytes of an English Wikipedia dump (Hutter Prize); modelled as bytes.
    'enwik8': Dataset(
        _MAHONEY + 'enwik8.zip', '2b49720ec4d78c3c9fabaee6e4179a5e997302b3a70029f30f2d582218c024a8',
        member='enwik8', vocab='byte',
        standard_split=(90_000_000, 5_000_000, 5_000_000),
        about='100 MB of Wikipedia XML, 205 byte values; 90M/5M/5M'),
    # enwik9 cleaned to lowercase a-z and spaces, first 10^8 characters.
    'text8': Dataset(
        _MAHONEY + 'text8.zip', '6e890197040d37d85beb962ae1f041ff1d9a9ca8d20c7d99c85027eebf51dca7',
        member='text8', standard_split=(90_000_000, 5_000_000, 5_000_000),
        about='100M characters of cleaned Wikipedia text, 27 symbols; 90M/5M/5M'),
    # The two other corpora the post links to. No checksums have been published for them.
    'warpeace': Dataset(
        _KARPATHY + 'warpeace_input.txt', None,
        about="Tolstoy's War and Peace as used in the post (no published checksum)"),
    'linux': Dataset(
        _KARPATHY + 'linux_input.txt', None,
        about='Linux kernel source, the sample the post links to (no published checksum)'),
}


def data_dir() -> pathlib.Path:
  """Where named datasets are cached: $SEQLAB_DATA_DIR, else ~/.cache/seqlab/data."""
  env = os.environ.get('SEQLAB_DATA_DIR')
  if env:
    return pathlib.Path(env).expanduser()
  return pathlib.Path('~/.cache/seqlab/data').expanduser()


def sha256_of(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(1 << 24):
      digest.update(chunk)
  return digest.hexdigest()


def lookup(name: str) -> Dataset:
  if name not in DATASETS:
    raise SeqlabError(
        f'unknown dataset {name!r}; known: {sorted(DATASETS)}, or set --config.data.path=FILE')
  return DATASETS[name]


def fetch(name: str) -> pathlib.Path:
  """The text file of dataset `name`, downloaded on first use."""
  dataset = lookup(name)
  target = data_dir() / name / 'input.txt'
  if target.exists():
    return target
  tmp_dir = None
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = pathlib.Path(tempfile.mkdtemp(dir=target.parent, prefix='.download-'))
    download = tmp_dir / 'download'
    with urllib.request.urlopen(dataset.url, timeout=60) as response, open(download, 'wb') as f:
      shutil.copyfileobj(response, f, length=1 << 20)
    text = download
    if dataset.member:
      text = tmp_dir / 'text'
      with zipfile.ZipFile(download) as archive, archive.open(dataset.member) as src, \
          open(text, 'wb') as dst:
        shutil.copyfileobj(src, dst, length=1 << 20)
    if dataset.sha256 and sha256_of(text) != dataset.sha256:
      raise SeqlabError(f'download of {name} from {dataset.url} has the wrong sha256; put the '
                        f'right file at {target}')
    os.replace(text, target)
  except (OSError, zipfile.BadZipFile, KeyError) as e:  # urllib.error.URLError is an OSError
    raise SeqlabError(
        f'could not download {name} from {dataset.url} ({e}); put the '
        f'{"unzipped " if dataset.member else ""}file at {target} (or set SEQLAB_DATA_DIR to a '
        f'directory holding {name}/input.txt)') from None
  finally:
    if tmp_dir is not None:
      shutil.rmtree(tmp_dir, ignore_errors=True)
  return target


def resolve_path(dataset: str | None, path: str | None) -> pathlib.Path:
  """The text file to train on: `path` if given, else the named dataset's (fetched)."""
  if path:
    p = pathlib.Path(path).expanduser()
    if not p.exists():
      raise SeqlabError(f'data file {p} does not exist; fix --config.data.path')
    if p.is_dir():
      raise SeqlabError(f'data path {p} is a directory; point --config.data.path at a text file')
    return p
  if not dataset:
    raise SeqlabError('no data given; set --config.data.path=FILE or --config.data.dataset=NAME')
  return fetch(dataset)


def standard_split(dataset: str | None, path: str | None, vocab_mode: str,
                   use_standard: bool) -> tuple[int, int, int] | None:
  """The (train, val, test) sizes of a named dataset's standard split, if it has one and the
  config asks for it; None means: split by data.val_fraction / data.test_fraction."""
  if path or not dataset or not use_standard:
    return None
  spec = lookup(dataset)
  if spec.standard_split is None:
    return None
  if vocab_mode != spec.vocab:
    raise SeqlabError(f"{dataset}'s standard split counts {spec.vocab} symbols; set "
                      f'--config.data.vocab={spec.vocab}, or data.standard_split=False')
  return spec.standard_split
