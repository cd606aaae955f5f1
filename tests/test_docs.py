"""The documentation stays true to the code: every module is on the map, README stays a front door.

Fast: reads files only (no JAX, no runs).
"""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README_LIMIT = 12 * 1024  # bytes: README.md is the front door; details live in docs/

# [text](target) and [text]: target; images too. Not inside code spans or blocks.
_INLINE_LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
_REFERENCE_LINK = re.compile(r'^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+"[^"]*")?\s*$', re.M)
_FENCE = re.compile(r'^(```|~~~).*?^\1', re.M | re.S)
_CODE_SPAN = re.compile(r'`[^`\n]*`')


def seqlab_modules() -> list[str]:
  """Every module under seqlab/, as 'seqlab/run/checkpoint.py', package markers excluded."""
  return sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / 'seqlab').rglob('*.py')
                if p.name not in ('__init__.py', '__main__.py'))


def local_links(markdown: str) -> list[str]:
  """The targets of links to local files in `markdown` (URLs and in-page anchors left out)."""
  text = _CODE_SPAN.sub('', _FENCE.sub('', markdown))
  targets = _INLINE_LINK.findall(text) + _REFERENCE_LINK.findall(text)
  return [t for t in targets
          if not re.match(r'^[a-z][a-z0-9+.-]*:', t, re.I) and not t.startswith('#')]


def _is_model(module: str) -> bool:
  """A model's own module (it registers itself): docs/zoo.md names it, not the module map."""
  return 'registry.register(' in (ROOT / module).read_text(encoding='utf-8')


def _names(markdown: str, module: str) -> bool:
  # A whole path: `seqlab/sample.py` is not named by `seqlab/analysis/sample.py`.
  return bool(re.search(rf'(?<![\w/.]){re.escape(module)}(?![\w/])', markdown))


def test_design_doc_names_every_module():
  design = (ROOT / 'docs' / 'design.md').read_text(encoding='utf-8')
  modules = seqlab_modules()
  assert modules, 'found no modules under seqlab/'
  missing = [m for m in modules if not _is_model(m) and not _names(design, m)]
  assert not missing, ('docs/design.md does not name these modules in its module map; add one '
                       'line each: ' + ', '.join(missing))


def test_the_zoo_doc_names_every_model_module():
  zoo = (ROOT / 'docs' / 'zoo.md').read_text(encoding='utf-8')
  models = [m for m in seqlab_modules() if _is_model(m)]
  assert len(models) >= 5, models
  missing = [m for m in models if not _names(zoo, m)]
  assert not missing, 'docs/zoo.md does not name these model modules: ' + ', '.join(missing)


def test_readme_is_a_front_door():
  size = (ROOT / 'README.md').stat().st_size
  assert size <= README_LIMIT, (f'README.md is {size:,} bytes, over {README_LIMIT:,}; move detail '
                                'into docs/ or experiments/ and link to it')


def test_readme_links_point_to_existing_files():
  readme = ROOT / 'README.md'
  links = local_links(readme.read_text(encoding='utf-8'))
  assert links, 'README.md links to no local files (docs/, experiments/)'
  broken = [t for t in links
            if not (readme.parent / t.split('#', 1)[0].split('?', 1)[0]).exists()]
  assert not broken, f'README.md links to files that do not exist: {broken}'


def test_link_finder_sees_links_and_skips_code_and_urls():
  text = ('[a](docs/a.md) ![img](x.png "t") [web](https://x.org) [here](#top)\n'
          '`[not](code.md)`\n```\n[not](block.md)\n```\n[ref]: docs/ref.md\n')
  assert local_links(text) == ['docs/a.md', 'x.png', 'docs/ref.md']
