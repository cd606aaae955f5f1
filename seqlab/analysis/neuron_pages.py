"""The post's two pictures, as self-contained HTML pages and as PNGs (matplotlib).

(a) `write_unit_page`: the text, each character shaded by one unit's value after
    reading it (blue positive, red negative, white zero; scaled by the unit's
    largest magnitude in the text).
(b) `write_predictions_page`: under every character, the model's 5 most likely
    next characters, shaded by their probability.
The PNGs show the start of the text (they are for READMEs and papers); the HTML
pages show all of it, with exact values on hover.
"""

import html
import pathlib

import matplotlib
matplotlib.use('Agg')  # files only, never a window
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from seqlab.run import directory as rundir

_POSITIVE = np.array([49, 130, 189])  # blue
_NEGATIVE = np.array([214, 96, 77])  # red
_PROBABLE = np.array([65, 171, 93])  # green
_WHITE = np.array([255, 255, 255])


def _blend(colour: np.ndarray, t: float) -> np.ndarray:
  return np.round(_WHITE + (colour - _WHITE) * float(np.clip(t, 0.0, 1.0))).astype(int)


def unit_colours(values: np.ndarray) -> tuple[list[np.ndarray], float]:
  """RGB 0-255 per value, and the scale (largest |value|) they were divided by."""
  scale = float(np.max(np.abs(values))) or 1.0
  return [_blend(_POSITIVE if v >= 0 else _NEGATIVE, abs(v) / scale) for v in values], scale


def _visible(ch: str, space: str = '\u00a0') -> str:
  return {'\n': '↵', '\t': '→', ' ': space}.get(ch, ch)


def _css(rgb) -> str:
  return f'rgb({rgb[0]},{rgb[1]},{rgb[2]})'


def _page(title: str, body: str) -> str:
  return ('<!doctype html>\n<html><head><meta charset="utf-8">'
          f'<title>{html.escape(title)}</title><style>'
          'body{font-family:sans-serif;margin:2em}'
          '.text{font-family:monospace;font-size:15px;line-height:1.5;white-space:pre-wrap}'
          '.col{display:inline-block;font-family:monospace;font-size:13px;text-align:center;'
          'margin:0 1px 10px 0;vertical-align:top}.col div{width:1.3em;height:1.35em}'
          '.col .c{font-weight:bold;border-bottom:1px solid #888}'
          f'</style></head><body><h3>{html.escape(title)}</h3>\n{body}\n</body></html>\n')


def unit_html(text: str, values: np.ndarray, title: str) -> str:
  colours, scale = unit_colours(values)
  spans = []
  for ch, value, rgb in zip(text, values, colours):
    spans.append(f'<span style="background:{_css(rgb)}" title="{value:+.3f}">'
                 f'{html.escape(_visible(ch) if ch == chr(10) else ch)}</span>'
                 + ('\n' if ch == '\n' else ''))
  legend = (f'<p>Blue: positive, red: negative, white: 0; full colour at |value| = {scale:.3f}. '
            'Hover a character for the value after reading it.</p>')
  return _page(title, legend + '<div class="text">' + ''.join(spans) + '</div>')


def predictions_html(text: str, symbols: list[list[str]], probs: np.ndarray) -> str:
  cols = []
  for ch, row_symbols, row_probs in zip(text, symbols, probs):
    cells = ''.join(f'<div style="background:{_css(_blend(_PROBABLE, p))}" title="{p:.3f}">'
                    f'{html.escape(_visible(s, "␣"))}</div>'
                    for s, p in zip(row_symbols, row_probs))
    cols.append(f'<span class="col"><div class="c">{html.escape(_visible(ch))}</div>{cells}'
                '</span>' + ('<br>' if ch == '\n' else ''))
  legend = ('<p>Each column: a character of the text (bold), then the 5 characters the model '
            'thinks most likely to come next, darker green = more probable (hover for p).</p>')
  return _page('Top-5 next-character predictions', legend + ''.join(cols))


def _lines(text: str, width: int) -> list[list[int]]:
  """Positions of `text` laid out in lines of at most `width`, breaking after newlines."""
  lines, current = [], []
  for i, ch in enumerate(text):
    current.append(i)
    if ch == '\n' or len(current) == width:
      lines.append(current)
      current = []
  return lines + ([current] if current else [])


def unit_png(path: pathlib.Path, text: str, values: np.ndarray, title: str,
             max_chars: int = 1200, width: int = 90) -> None:
  text, values = text[:max_chars], values[:max_chars]
  colours, scale = unit_colours(values)
  lines = _lines(text, width)
  fig = plt.figure(figsize=(width * 0.1 + 0.4, len(lines) * 0.19 + 0.6), dpi=110)
  ax = fig.add_axes((0, 0, 1, 1 - 0.45 / fig.get_figheight()))
  ax.set_xlim(-0.5, width + 0.5)
  ax.set_ylim(len(lines), -0.2)
  ax.axis('off')
  for row, positions in enumerate(lines):
    for col, i in enumerate(positions):
      ax.add_patch(plt.Rectangle((col, row), 1, 1, color=colours[i] / 255, lw=0))
      ax.text(col + 0.5, row + 0.55, _visible(text[i]), ha='center', va='center',
              family='monospace', fontsize=8)
  fig.suptitle(f'{title}  (blue +, red −, full colour at |v| = {scale:.2f})', fontsize=9,
               y=1 - 0.1 / fig.get_figheight(), va='top')
  fig.savefig(path)
  plt.close(fig)


def predictions_png(path: pathlib.Path, text: str, symbols: list[list[str]], probs: np.ndarray,
                    max_chars: int = 120, width: int = 40) -> None:
  text = text[:max_chars]
  lines = _lines(text, width)
  rows_per_line = 1 + probs.shape[1] + 1  # the character, its predictions, a gap
  total = len(lines) * rows_per_line
  fig = plt.figure(figsize=(width * 0.22 + 0.4, total * 0.2 + 0.5), dpi=110)
  ax = fig.add_axes((0, 0, 1, 1 - 0.4 / fig.get_figheight()))
  ax.set_xlim(-0.5, width + 0.5)
  ax.set_ylim(total, -0.2)
  ax.axis('off')
  for line, positions in enumerate(lines):
    top = line * rows_per_line
    for col, i in enumerate(positions):
      ax.text(col + 0.5, top + 0.55, _visible(text[i]), ha='center', va='center',
              family='monospace', fontsize=9, weight='bold')
      for k, (s, p) in enumerate(zip(symbols[i], probs[i])):
        ax.add_patch(plt.Rectangle((col + 0.05, top + 1 + k), 0.9, 1,
                                   color=_blend(_PROBABLE, p) / 255, lw=0))
        ax.text(col + 0.5, top + 1.55 + k, _visible(s, '␣'), ha='center', va='center',
                family='monospace', fontsize=8)
  fig.suptitle('Top-5 next-character predictions (darker = more probable)', fontsize=9,
               y=1 - 0.1 / fig.get_figheight(), va='top')
  fig.savefig(path)
  plt.close(fig)


def write_unit_page(stem: pathlib.Path, text: str, values: np.ndarray, title: str) -> None:
  """Writes `stem`.html (all of the text) and `stem`.png (its start)."""
  rundir.write_atomic(stem.with_suffix('.html'), unit_html(text, values, title))
  unit_png(stem.with_suffix('.png'), text, values, title)


def write_predictions_page(stem: pathlib.Path, text: str, symbols, probs: np.ndarray) -> None:
  rundir.write_atomic(stem.with_suffix('.html'), predictions_html(text, symbols, probs))
  predictions_png(stem.with_suffix('.png'), text, symbols, probs)
