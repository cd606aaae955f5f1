"""One run of configs/enwik8.py's model on a corpus file, stopped after N steps (the H200 rows).

  python -m experiments.scale_out.steps_on_corpus FILE LAYERS HIDDEN STEPS
  e.g. FILE=/tmp/standin100m.txt 3 1024 400

Evaluates the val split once at the last step; prints a JSON line with the peak host memory
(VmHWM, RssAnon, RssFile in MB), the data-loading share and chars/s (both averaged over the log
steps after the first, which includes compilation).
"""

import json
import sys
import tempfile
import time

from tensorboard.backend.event_processing import event_accumulator

from configs import enwik8
from seqlab import train


def peak() -> dict:
  status = dict(line.split(':', 1) for line in open('/proc/self/status', encoding='utf-8'))
  return {k: int(status[k].split()[0]) / 1024 for k in ('VmHWM', 'RssAnon', 'RssFile')}


def main(path: str, layers: int, hidden: int, steps: int) -> None:
  with tempfile.TemporaryDirectory() as tmp:
    config = enwik8.get_config()
    config.data.path = path
    config.data.val_fraction = config.data.test_fraction = 0.05  # 90M/5M/5M of 100M
    config.model.num_layers, config.model.hidden_size = layers, hidden
    config.eval.every_steps = steps
    config.log.every_steps, config.log.sample_steps = 50, ()
    start = time.perf_counter()
    train.train_and_evaluate(config, tmp + '/run', stop_at_step=steps)
    wall = time.perf_counter() - start
    events = event_accumulator.EventAccumulator(tmp + '/run', size_guidance={'scalars': 0})
    events.Reload()
    share = [e.value for e in events.Scalars('data_time_fraction')][1:]
    speed = [e.value for e in events.Scalars('chars_per_sec')][1:]
    val = [e.value for e in events.Scalars('val/loss')]
    print(json.dumps(dict(model=f'{layers}x{hidden}', steps=steps, wall=wall,
                          peak_rss_mb=peak(), data_share=sum(share) / len(share),
                          chars_per_sec=sum(speed) / len(speed), val_loss=val)))


if __name__ == '__main__':
  main(sys.argv[1], *map(int, sys.argv[2:5]))
