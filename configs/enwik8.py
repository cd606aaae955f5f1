r"""Byte-level LSTM on enwik8 (100 MB of Wikipedia), with the literature's 90M/5M/5M split.

  python launch.py --config configs/enwik8.py --workdir runs/enwik8
      3x1024 LSTM, batch 128 x 128 bytes, 20,000 steps (328M bytes, 3.6 epochs); reports val
      and test bits per byte (bpc), the number enwik8 papers quote. Trains at 730k bytes/s on
      one H200 (measured on a 100 MB stand-in, 2026-11-27), so about 7.5 minutes of training.
      Not yet trained on enwik8 itself: our machines cannot reach mattmahoney.net, so there is
      no val bpc to quote here yet (docs/scaling.md).
  python launch.py --config configs/enwik8.py:smoke --workdir runs/enwik8-smoke
      a tiny model for 40 steps: checks the download, the byte vocabulary and the split.

The first run downloads enwik8.zip (36 MB) into $SEQLAB_DATA_DIR/enwik8/, checks
the sha256 of the unzipped file and encodes it once into a memory-mapped uint8
array ($SEQLAB_CACHE_DIR); later runs map it in a fraction of a second. On
several devices the batch is split over them (`parallel.num_devices`, default all).
"""

from configs import shakespeare


def get_config(arg: str | None = None):
  config = shakespeare.get_config()
  config.data.dataset = 'enwik8'
  config.data.vocab = 'byte'  # enwik8 is modelled as bytes; the split counts bytes
  config.data.standard_split = True  # first 90M train, next 5M val, last 5M test
  config.data.max_vocab_size = 256
  config.data.batch_size = 128
  config.data.seq_len = 128

  config.model.num_layers = 3
  config.model.hidden_size = 1024
  config.model.embed_size = 256  # 205 byte values: an embedding, not a 205-wide one-hot
  config.model.dropout = 0.1  # 3.6 epochs of 90M bytes: little overfitting to fight

  config.optim.learning_rate = 2e-3
  config.optim.warmup_steps = 500
  config.train.num_steps = 20_000

  config.eval.every_steps = 2000
  config.eval.num_streams = 256  # 5M bytes of val per evaluation, in 256 parallel streams
  config.eval.seq_len = 512
  config.log.every_steps = 100
  config.log.checkpoint_every_steps = 1000
  config.log.sample_steps = (500, 2000)
  config.log.sample_every_steps = 5000
  config.log.sample_prime = '<page>'
  # The n-gram table of 90M training bytes would need several GB; skip the novelty report.
  config.log.novelty_num_samples = 0

  return shakespeare.apply_variants(config, arg, VARIANTS, 'configs/enwik8.py')


def _smoke(config):
  """Tiny and short: the data path end to end (download, bytes, standard split)."""
  config.model.num_layers = 1
  config.model.hidden_size = 32
  config.model.embed_size = 16
  config.data.batch_size = 8
  config.data.seq_len = 32
  config.train.num_steps = 40
  config.optim.warmup_steps = 5
  config.eval.every_steps = 40
  config.eval.num_streams = 64
  config.log.every_steps = 10
  config.log.checkpoint_every_steps = 40
  config.log.sample_steps = (20,)
  config.log.sample_every_steps = 40
  config.log.sample_length = 100


VARIANTS = {'smoke': _smoke}
