"""Writes a ~1 MB Python-source corpus from CPython's standard library (a stand-in for the post's
Linux-source corpus, which cannot be downloaded here): the top-level `*.py` modules in sorted
order until the size is reached. Same CPython version -> same file (the README gives its sha256).

  python -m experiments.neurons.make_code_corpus /tmp/pystdlib.txt
"""

import hashlib
import pathlib
import sys
import sysconfig

TARGET_BYTES = 1_100_000


def main(out: str) -> None:
  stdlib = pathlib.Path(sysconfig.get_paths()['stdlib'])
  parts, size = [], 0
  for path in sorted(stdlib.glob('*.py')):
    text = path.read_text(encoding='utf-8')
    if not text.isascii():  # keep the vocabulary small and the file UTF-8 = ASCII
      continue
    parts.append(text)
    size += len(text)
    if size >= TARGET_BYTES:
      break
  data = ''.join(parts).encode('ascii')
  pathlib.Path(out).write_bytes(data)
  print(f'{out}: {len(data):,} bytes from {len(parts)} modules of {stdlib} '
        f'(Python {sys.version.split()[0]}), sha256 {hashlib.sha256(data).hexdigest()}')


if __name__ == '__main__':
  main(sys.argv[1])
