"""The run directory's small files: config.json, vocab.json, results.json, samples.md.

The run directory *is* the run: re-running with the same directory resumes.
Files are written atomically (temporary file, then rename), so an interrupted
write never leaves a half-written file behind.
"""

import json
import os
import pathlib
import re
import tempfile

from seqlab.errors import SeqlabError
from seqlab.models import registry

CONFIG_FILENAME = 'config.json'
RESULTS_FILENAME = 'results.json'
SAMPLES_FILENAME = 'samples.md'
CHECKPOINTS = 'checkpoints'  # CHECKPOINTS/latest/<step>/ and CHECKPOINTS/best/<step>/
# Config fields that fix the parameters' shapes, the optimizer state or the function the
# model computes: a run directory refuses to resume with other values. That is every
# `model` field (and its `name`) except those its model declares free (speed or
# regularization only: `registry.Model.free_fields`) and `model.module` (where it is defined).
SHAPE_FIELDS = (('data', 'vocab'), ('optim', 'name'))


def steps_on_disk(workdir: pathlib.Path, which: str = 'latest') -> list[int]:
  """The steps of the complete checkpoints in `which`, sorted, read without creating anything.

  Orbax writes into `<step>.orbax-checkpoint-tmp-*` and renames when done, so
  only all-digit folder names are complete checkpoints.
  """
  folder = pathlib.Path(workdir) / CHECKPOINTS / which
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) \
      if folder.is_dir() else []


def latest_step_on_disk(workdir: pathlib.Path, which: str = 'latest') -> int | None:
  """The step of the newest complete checkpoint, read without creating anything."""
  return max(steps_on_disk(workdir, which), default=None)


def write_atomic(path: pathlib.Path, text: str) -> None:
  path = pathlib.Path(path)
  with tempfile.NamedTemporaryFile('w', dir=path.parent, delete=False, encoding='utf-8',
                                   prefix=f'.{path.name}.') as tmp:
    tmp.write(text)
  os.chmod(tmp.name, 0o644)
  os.replace(tmp.name, path)


def load_json(path: pathlib.Path) -> dict | None:
  path = pathlib.Path(path)
  return json.loads(path.read_text(encoding='utf-8')) if path.exists() else None


def check_compatible(workdir: pathlib.Path, config_dict: dict) -> None:
  """Raises if `workdir` holds a run whose parameter shapes differ from `config_dict`'s.

  A model field missing from either side is its default (`registry.defaults`): a run saved
  before a field existed (e.g. min_rnn's conv_width) resumes under a config that states it.
  """
  saved = load_json(pathlib.Path(workdir) / CONFIG_FILENAME)
  if saved is None:
    return

  def with_defaults(model: dict) -> dict:
    model = {'name': registry.DEFAULT, **model}
    return {**registry.defaults(model['name']), **model}

  old_model = with_defaults(saved.get('model', {}))
  new_model = with_defaults(config_dict['model'])
  changed = [(group, field, saved.get(group, {}).get(field), config_dict[group].get(field))
             for group, field in SHAPE_FIELDS]
  changed += [('model', k, old_model.get(k), new_model.get(k))
              for k in sorted(set(old_model) | set(new_model), key=lambda k: (k != 'name', k))
              if k not in registry.free_fields(new_model['name'])]
  for group, field, old, new in changed:
    if old != new:
      raise SeqlabError(
          f'{workdir} holds a run with {group}.{field}={old!r}, but the config says {new!r}; '
          f'use a new --workdir (or set --config.{group}.{field}={old!r} to resume it)')


def write_config(workdir: pathlib.Path, config_dict: dict) -> None:
  write_atomic(pathlib.Path(workdir) / CONFIG_FILENAME,
               json.dumps(config_dict, indent=2, sort_keys=True, default=str))


def write_results(workdir: pathlib.Path, results: dict) -> None:
  write_atomic(pathlib.Path(workdir) / RESULTS_FILENAME, json.dumps(results, indent=2))


def append_sample(workdir: pathlib.Path, step: int, val_loss: float | None,
                  val_step: int | None, text: str) -> None:
  """Appends one sample to samples.md (the run's "evolution of samples"), headed by its step
  and the latest val loss (measured at `val_step`)."""
  if val_loss is None:
    loss = 'no val loss yet'
  else:
    loss = f'val loss {val_loss:.4f}' + (f' at step {val_step}' if val_step != step else '')
  with open(pathlib.Path(workdir) / SAMPLES_FILENAME, 'a', encoding='utf-8') as f:
    f.write(f'## step {step} ({loss})\n\n```\n{text}\n```\n\n')


def drop_samples_after(workdir: pathlib.Path, step: int) -> None:
  """Removes samples.md entries past `step`: a resumed run writes them again."""
  path = pathlib.Path(workdir) / SAMPLES_FILENAME
  if not path.exists():
    return
  entries = re.split(r'(?m)^(?=## step \d+ )', path.read_text(encoding='utf-8'))
  kept = [e for e in entries if not (m := re.match(r'## step (\d+) ', e)) or int(m[1]) <= step]
  write_atomic(path, ''.join(kept))
