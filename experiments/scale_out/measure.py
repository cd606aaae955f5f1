"""Measurements for docs/scaling.md (run from the repository root).

  python -m experiments.scale_out.measure devices      # 4 forced CPU devices vs 1
  python -m experiments.scale_out.measure corpus FILE  # a 100 MB corpus: memory, data time

`devices` trains the same short run (tiny Shakespeare, 2x128 LSTM, batch 32, 200 steps) on 1
CPU device and on 4 (XLA_FLAGS=--xla_force_host_platform_device_count=4), each in its own
process, and compares the logged losses.

`corpus FILE` measures, each in a fresh process (peak RSS = the process's VmHWM):
  1. encoding FILE into the token cache (first use), then mapping it again (later runs);
  2. a few training steps of a model on FILE as a byte corpus with enwik8's split sizes
     (90M/5M/5M), against the same model on 1 MB of tiny Shakespeare: the difference in peak
     RSS is what the big corpus costs; the data-loading share is host time spent assembling
     batches over training time.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _python(code: str, env=None, prelude: str = '') -> dict:
  """Runs `prelude` + `code` in a fresh interpreter; it prints one JSON line last."""
  out = subprocess.run([sys.executable, '-c', prelude + textwrap.dedent(code)], cwd=ROOT,
                       env=dict(os.environ, **(env or {})),
                       capture_output=True, text=True, check=False)
  if out.returncode:
    raise SystemExit(out.stdout[-2000:] + out.stderr[-3000:])
  return json.loads(out.stdout.strip().splitlines()[-1])


_PEAK = '''
def peak():
  status = dict(line.split(':', 1) for line in open('/proc/self/status'))
  kb = lambda key: int(status[key].split()[0])
  return {'peak_rss_mb': kb('VmHWM') / 1024, 'rss_anon_mb': kb('RssAnon') / 1024,
          'rss_file_mb': kb('RssFile') / 1024}
'''


def devices() -> None:
  rows = {}
  for count in (1, 4):
    with tempfile.TemporaryDirectory() as tmp:
      rows[count] = _python(f'''
        import json, time
        from configs import shakespeare
        from seqlab import train
        from tensorboard.backend.event_processing import event_accumulator
        config = shakespeare.get_config('smoke')
        config.model.hidden_size, config.data.batch_size, config.data.seq_len = 128, 32, 64
        config.train.num_steps, config.eval.every_steps = 200, 100
        config.log.every_steps, config.log.sample_steps = 1, ()
        config.log.sample_every_steps = config.log.checkpoint_every_steps = 100
        config.model.dropout = 0.0
        start = time.perf_counter()
        results = train.train_and_evaluate(config, {tmp!r} + '/run')
        events = event_accumulator.EventAccumulator({tmp!r} + '/run', size_guidance={{'scalars': 0}})
        events.Reload()
        losses = [e.value for e in events.Scalars('train/loss')]
        print(json.dumps({{'val_loss': results['val_loss'], 'losses': losses,
                          'chars_per_sec': results['chars_per_sec'],
                          'seconds': time.perf_counter() - start}}))
      ''', env={'XLA_FLAGS': f'--xla_force_host_platform_device_count={count}'})
  one, four = rows[1], rows[4]
  worst = max(abs(a - b) / abs(a) for a, b in zip(one['losses'], four['losses']))
  print('| devices | val loss | train chars/s | wall s |\n|---|---:|---:|---:|')
  for count, row in rows.items():
    print(f'| {count} | {row["val_loss"]:.6f} | {row["chars_per_sec"]:,.0f} | '
          f'{row["seconds"]:.1f} |')
  print(f'largest relative difference of the 200 logged train losses: {worst:.2e}')


def corpus(path: str) -> None:
  size = pathlib.Path(path).stat().st_size
  with tempfile.TemporaryDirectory() as cache:
    env = {'SEQLAB_CACHE_DIR': cache}
    for label in ('first use (encodes)', 'later use (maps)'):
      row = _python(f'''
        import json, time
        from seqlab import data
        start = time.perf_counter()
        corpus = data.load_corpus({path!r}, 'byte', 0.05, 0.05)
        seconds = time.perf_counter() - start
        print(json.dumps(dict(peak(), seconds=seconds, train=len(corpus.train),
                              dtype=str(corpus.train.dtype), vocab=corpus.vocab.size)))
      ''', env, _PEAK)
      print(f'{label}: {size / 1e6:.0f} MB -> {row["train"]:,} train ids ({row["dtype"]}, vocab '
            f'{row["vocab"]}) in {row["seconds"]:.2f} s, peak RSS {row["peak_rss_mb"]:.0f} MB')
    shakespeare_file = ROOT.parent / 'shared/data/tinyshakespeare/input.txt'
    for model in ('3x1024', '1x256'):
      layers, hidden = map(int, model.split('x'))
      for name, data_path in (('100 MB corpus', path), ('tiny Shakespeare', shakespeare_file)):
        with tempfile.TemporaryDirectory() as tmp:
          row = _python(f'''
            import json
            from configs import enwik8
            from seqlab import train
            from tensorboard.backend.event_processing import event_accumulator
            config = enwik8.get_config()
            config.data.path = {str(data_path)!r}
            config.data.val_fraction = config.data.test_fraction = 0.05  # = 90M/5M/5M of 100M
            config.model.num_layers, config.model.hidden_size = {layers}, {hidden}
            config.eval.every_steps = 10_000
            config.log.every_steps, config.log.sample_steps = 2, ()
            steps = 6 if {hidden} > 512 else 60
            train.train_and_evaluate(config, {tmp!r} + '/run', stop_at_step=steps)
            events = event_accumulator.EventAccumulator({tmp!r} + '/run',
                                                        size_guidance={{'scalars': 0}})
            events.Reload()
            share = [e.value for e in events.Scalars('data_time_fraction')]
            speed = [e.value for e in events.Scalars('chars_per_sec')]
            print(json.dumps(dict(peak(), data_share=sum(share) / len(share),
                                  chars_per_sec=sum(speed) / len(speed))))
          ''', env, _PEAK)
        print(f'{model} LSTM, batch 128x128, {name}: peak RSS {row["peak_rss_mb"]:.0f} MB '
              f'(anon {row["rss_anon_mb"]:.0f}, file {row["rss_file_mb"]:.0f} at the end), '
              f'data loading {row["data_share"]:.2%} of training time, '
              f'{row["chars_per_sec"]:,.0f} chars/s')


if __name__ == '__main__':
  {'devices': lambda: devices(), 'corpus': lambda: corpus(sys.argv[2])}[sys.argv[1]]()
