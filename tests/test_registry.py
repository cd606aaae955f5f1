"""A model is one module that declares itself: no other library module names it.

The syntax tree of every module under seqlab/ is walked: outside a model's own module there is
no string literal equal to its name (the registry's default aside), no `isinstance` on its
config class, and no import of its module (the registry finds the package's models by
importing every module of seqlab.models, without naming them).
"""

import ast
import pathlib
import re

import pytest

from seqlab.errors import SeqlabError
from seqlab.models import registry

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT / 'seqlab').rglob('*.py'))
REGISTRY = ROOT / 'seqlab' / 'models' / 'registry.py'


def _models():
  return [registry.get(name) for name in registry.names() if registry.is_builtin(registry.get(name))]


def _named(node) -> str | None:
  """The last name of `x`, `a.x` or `a.b.x`."""
  if isinstance(node, ast.Name):
    return node.id
  if isinstance(node, ast.Attribute):
    return node.attr
  return None


def _offences(path: pathlib.Path, models) -> list[str]:
  tree = ast.parse(path.read_text(encoding='utf-8'), str(path))
  where = path.relative_to(ROOT)
  own = [m for m in models if pathlib.Path(m.source) == path]
  others = [m for m in models if m not in own]
  names = {m.name: m for m in others}
  classes = {m.config_class.__name__: m for m in others}
  modules = {pathlib.Path(m.source).stem: m for m in others}
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
      default = path == REGISTRY and node.value == registry.DEFAULT
      if not default:
        found.append(f'{where}:{node.lineno}: the string {node.value!r} names a model')
    if (isinstance(node, ast.Call) and _named(node.func) == 'isinstance' and len(node.args) == 2):
      targets = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
      for target in targets:
        if _named(target) in classes:
          found.append(f'{where}:{node.lineno}: isinstance on {_named(target)}, the config of '
                       f'model {classes[_named(target)].name!r}')
    if isinstance(node, ast.ImportFrom) and node.module:
      imported = [node.module.rsplit('.', 1)[-1]] if node.module.startswith('seqlab.models.') \
          else [a.name for a in node.names] if node.module == 'seqlab.models' else []
      for name in imported:
        if name in modules:
          found.append(f'{where}:{node.lineno}: imports the module of model '
                       f'{modules[name].name!r}')
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith('seqlab.models.') and alias.name.rsplit('.', 1)[-1] in modules:
          found.append(f'{where}:{node.lineno}: imports the module of model '
                       f'{modules[alias.name.rsplit(".", 1)[-1]].name!r}')
  return found


def test_no_library_module_names_a_model_outside_its_own():
  models = _models()
  assert {m.name for m in models} >= {registry.DEFAULT} and len(models) >= 5
  found = [o for path in LIBRARY for o in _offences(path, models)]
  assert not found, '\n'.join(found)


def test_the_check_sees_each_kind_of_naming(tmp_path):
  """The walk above finds a name, an isinstance and an import where they are (a positive
  control: a walk that found nothing would pass the test above vacuously)."""
  (hawk,) = [m for m in _models() if m.config_class.__name__ == 'HawkConfig']
  path = tmp_path / 'offender.py'
  path.write_text(f'from seqlab.models import {pathlib.Path(hawk.source).stem}\n'
                  f'def f(c):\n  return isinstance(c, x.HawkConfig) or c == {hawk.name!r}\n')
  global ROOT  # pylint: disable=global-statement
  root, ROOT = ROOT, tmp_path
  try:
    found = _offences(path, _models())
  finally:
    ROOT = root
  assert sorted(f.split(': ', 1)[1] for f in found) == sorted([
      f'imports the module of model {hawk.name!r}',
      f'isinstance on HawkConfig, the config of model {hawk.name!r}',
      f'the string {hawk.name!r} names a model']), found


def test_every_package_model_is_found_by_walking_the_package():
  """The registry imports every module of seqlab.models; each model module registers once."""
  registering = sorted(p.stem for p in (ROOT / 'seqlab' / 'models').glob('*.py')
                       if 'registry.register(' in p.read_text(encoding='utf-8'))
  assert sorted(pathlib.Path(m.source).stem for m in _models()) == registering


@pytest.mark.parametrize('group, message', [
    ({'name': 'transformer'}, "unknown model.name 'transformer'; use one of char_rnn"),
    ({'name': 'mine', 'module': '/nowhere/my_model.py'},
     "model.module '/nowhere/my_model.py': no such file"),
    ({'name': 'mine', 'module': 'no_such_package.my_model'},
     "model.module 'no_such_package.my_model' cannot be imported"),
])
def test_an_unknown_model_or_module_is_one_error(group, message):
  with pytest.raises(SeqlabError, match=re.escape(message)):
    registry.config_of(group, vocab_size=5)
