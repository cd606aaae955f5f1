r"""Character-level LSTM on tiny Shakespeare (the post's model), with variants.

Commands and what they measured (README.md and experiments/cpu_15min have the details):

  python launch.py --config configs/shakespeare.py
      3x512 LSTM, dropout 0.5, 6,000 steps: val 1.4566 nats/char (2.1014 bpc) in 94 s on one
      H200 (2026-11-26); about 23 min per 1,000 steps on a 2-core CPU (seqlab.bench, shape L).
  python launch.py --config configs/shakespeare.py:cpu
      2x256 LSTM, 4,900 steps, batch split over 2 CPU devices: val 1.4858 nats/char
      (2.1435 bpc) in 7.3 min on a 2-core CPU (2026-11-27).
  python launch.py --config configs/shakespeare.py:cpu15
      the same LSTM, lr 0.01, dropout 0.2, 8,099 steps (the equal-compute study's best at 0.8M):
      val 1.4638 nats/char (stream), 1.4896 over windows of 256, in 15.8 min (2026-12-01).
  python launch.py --config configs/shakespeare.py:smoke
      tiny model, 40 steps, every code path (eval, test split, samples, checkpoints): 15-17 s
      on CPU for the whole command (2026-11-27; mostly compilation). Val 3.4916 nats/char on
      one CPU device and on the 2 that the default `parallel.cpu_devices` gives a 2-core CPU.

  python launch.py --config configs/shakespeare.py --sweep --workdir runs/depth-width-dropout
      get_sweep's 27 trials (depth x width x dropout), one run directory each.
  python launch.py --config configs/shakespeare.py:smoke --sweep --fused
      the 2 x 2 smoke grid (hidden size x dropout), two fused groups: 45 s on a 2-core CPU.

Variants after the colon can be combined with commas (`:cpu,smoke`). Any field
can be overridden: `--config.model.hidden_size=256 --config.model.cell=gru`.
"""

from ml_collections import config_dict

from seqlab import sweeps


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
  config = config_dict.ConfigDict()
  config.seed = 0  # params, dropout and batch order all derive from it

  # --- data: the text, its vocabulary, splits and batches.
  config.data = config_dict.ConfigDict()
  config.data.dataset = 'tinyshakespeare'  # a named dataset (downloaded once, sha256-checked)
  config.data.path = config_dict.placeholder(str)  # a local text file; wins over `dataset`
  config.data.vocab = 'char'  # 'char': Unicode code points; 'byte': raw bytes (non-UTF-8 text)
  config.data.max_vocab_size = 10_000  # more distinct symbols is refused (a binary file?)
  config.data.val_fraction = 0.1  # nanoGPT's split: first 90% train, last 10% val
  config.data.test_fraction = 0.0  # taken from the end, after val
  # Named datasets with a split the literature uses (enwik8, text8: 90M/5M/5M) use it instead.
  config.data.standard_split = True
  config.data.batching = 'streams'  # 'streams': carried state (TBPTT); 'windows': random windows
  config.data.batch_size = 64
  config.data.seq_len = 100  # backprop-through-time length

  # --- model: the recurrent network.
  config.model = config_dict.ConfigDict()
  config.model.name = 'char_rnn'  # the post's models; configs/zoo.py has the others
  config.model.cell = 'lstm'  # 'rnn', 'gru' or 'lstm'
  config.model.num_layers = 3
  config.model.hidden_size = 512
  config.model.embed_size = 0  # 0: one-hot input as in char-rnn; >0: a learned embedding
  config.model.dropout = 0.5  # on the output of every recurrent layer
  config.model.unroll = 1  # jax.lax.scan unroll factor (speed only)
  config.model.backward = 'fused'  # seqlab.recurrence's custom VJP; 'autodiff': the reference
  # 'bfloat16' on GPU/TPU: bf16 matmul inputs; fp32 accumulation, state, params and loss.
  config.model.matmul_dtype = 'float32'

  # --- optim: optimizer and learning-rate schedule (all inside the jitted step).
  config.optim = config_dict.ConfigDict()
  config.optim.name = 'adam'  # 'adam', 'adamw' or 'rmsprop'
  config.optim.learning_rate = 2e-3  # peak learning rate
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999  # also rmsprop's decay
  config.optim.weight_decay = 0.0  # adamw only
  config.optim.decay = 'all'  # adamw: which parameters decay: 'all', or 'matrices' (nanoGPT's)
  config.optim.grad_clip = 5.0  # global-norm clipping; 0 disables
  config.optim.schedule = 'cosine'  # 'constant', 'cosine' (warmup + cosine) or 'exponential'
  config.optim.warmup_steps = 200  # 'cosine' only
  config.optim.final_lr_fraction = 0.05  # 'cosine': the rate ends at this fraction of the peak
  config.optim.decay_rate = 0.97  # 'exponential': factor per epoch (char-rnn)
  config.optim.decay_after_epochs = 10  # 'exponential': epochs before decay starts

  # --- train: length of the run.
  config.train = config_dict.ConfigDict()
  config.train.num_steps = 6000
  # After a NaN/Inf loss, grad norm or parameter: 'stop' (exit 3), or 'rollback' to the last
  # good checkpoint and continue with the learning rate times rollback_lr_factor.
  config.train.on_nonfinite = 'stop'
  config.train.rollback_lr_factor = 0.5
  config.train.max_rollbacks = 3

  # --- parallel: the devices and hosts of one run (docs/scaling.md).
  config.parallel = config_dict.ConfigDict()
  config.parallel.num_devices = 0  # 0: every device of every process; the batch is split over them
  # CPU only: split the host into this many devices, the batch over them (1: one device; the
  # batch must divide by it). 0: one per core this process may use, on a host without an
  # accelerator, lowered until it divides data.batch_size. One per core is ~1.5x faster for small
  # models (docs/design.md); on a GPU/TPU host the setting changes nothing.
  config.parallel.cpu_devices = 0
  # Multi-host (jax.distributed): host:port of process 0, the process count and this process's
  # id; or $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, $JAX_PROCESS_ID.
  config.parallel.coordinator_address = config_dict.placeholder(str)
  config.parallel.num_processes = config_dict.placeholder(int)
  config.parallel.process_id = config_dict.placeholder(int)
  config.parallel.distributed = False  # True: jax.distributed with SLURM/MPI/TPU auto-detection

  # --- eval: full passes over the val split (and the test split at the end), under two
  # protocols (seqlab/evaluate.py): 'stream' reads the split with the state carried from
  # its first symbol; 'windows' (nanoGPT's) reads windows of eval.window, each from nothing.
  config.eval = config_dict.ConfigDict()
  config.eval.every_steps = 500
  config.eval.protocol = 'stream'  # the one that is val_loss: best checkpoint, early stopping
  config.eval.both_protocols = True  # also evaluate the other one (logged under its name)
  config.eval.window = 256  # 'windows': nanoGPT's block_size (the GPT: at most its context)
  config.eval.num_streams = 16  # rows per evaluation step: contiguous streams, or windows
  config.eval.seq_len = 256  # 'stream': chunk length of the pass; the state carries across chunks

  # --- log: console, TensorBoard, samples and checkpoints.
  config.log = config_dict.ConfigDict()
  config.log.every_steps = 50  # console + TensorBoard scalars (the only host syncs)
  config.log.checkpoint_every_steps = 500
  config.log.sample_steps = (100, 300, 500, 700, 1200, 2000)  # then every sample_every_steps
  config.log.sample_every_steps = 2000
  config.log.sample_length = 500
  config.log.sample_temperature = 0.8
  config.log.sample_prime = '\n'
  # At the end: this many samples (best checkpoint) -> results.json 'copied_ngram_fraction',
  # the fraction of their 10/20/30-grams found verbatim in the train split. 0: skip.
  config.log.novelty_num_samples = 4

  return apply_variants(config, arg, VARIANTS, 'configs/shakespeare.py')


def apply_variants(config, arg: str | None, variants: dict, config_file: str):
  """Applies the comma-separated variants of `arg` (`smoke`, `cpu,smoke`) in order.

  An unknown variant is a ValueError whose message is the one line `launch.py`
  prints (`seqlab.command.parse_flags` unwraps it from ml_collections' traceback).
  """
  for variant in filter(None, (arg or '').split(',')):
    if variant not in variants:
      raise ValueError(f'unknown variant {variant!r} of {config_file}; known variants: '
                       f'{", ".join(sorted(variants))}')
    variants[variant](config)
  return config


def _cpu(config):
  """The best model we found for 15 minutes on a 2-core CPU (experiments/cpu_15min).

  Measured (2-core CPU, 7m16s): val loss 1.4858 nats/char under the stream protocol, 1.5129 +-
  0.0117 over windows of 256 from the zero state (nanoGPT's protocol; docs/evaluation.md).
  """
  config.model.num_layers = 2
  config.model.hidden_size = 256
  config.model.dropout = 0.0  # ~12 epochs in 15 minutes: too few to overfit a 2x256 LSTM
  config.data.batch_size = 32  # half of 64 costs ~10% in chars/s but gives 2x the updates
  config.data.seq_len = 64
  # One device per core on the 2-core CPU it was tuned on (1.47x the chars/s of one device);
  # fixed, so that the run and its val loss are the same on a host with more cores.
  config.parallel.cpu_devices = 2
  config.optim.learning_rate = 5e-3
  config.train.num_steps = 4900


def _cpu15(config):
  """The best 0.8M recipe of the equal-compute study (experiments/zoo; its best at 5M is
  configs/zoo.py:hawk_cpu15): `:cpu`'s LSTM trained for 15 minutes of train steps on a 2-core
  CPU, at the study's swept learning rate and the dropout its ladder chose. Its seed-0 run is
  experiments/zoo/runs/dropout/lstm-0.8M-d0.2-s0.

  Measured (2-core CPU, 2026-12-01; 889 s of train steps, 15m45s in all): val loss 1.4638
  nats/char under the stream protocol (best checkpoint 1.4598 at step 7,290), 1.4896 +- 0.0129
  over windows of 256 from the zero state (nanoGPT's protocol, where its baby GPT has 1.4697).
  """
  _cpu(config)
  config.optim.learning_rate = 1e-2  # the sweep's best of 2.5e-3 to 2e-2 (a third of the budget)
  config.model.dropout = 0.2  # the full-budget ladder's (stream): 0 1.5568, 0.1 1.4844, 0.3 1.4750
  config.train.num_steps = 8099  # 15 minutes at the 111 ms/step measured for this recipe
  config.eval.every_steps = 810
  config.log.checkpoint_every_steps = 810


def _smoke(config):
  """Tiny and short, for tests and a first look: real data, every code path."""
  config.model.num_layers = 2
  config.model.hidden_size = 32
  config.model.dropout = 0.1
  config.data.batch_size = 16
  config.data.seq_len = 32
  config.data.test_fraction = 0.05  # exercises the test pass
  config.train.num_steps = 40
  config.optim.warmup_steps = 5
  config.eval.every_steps = 20
  config.eval.seq_len = 256  # = eval.window: both protocols share one compiled eval step
  config.log.every_steps = 10
  config.log.checkpoint_every_steps = 20
  config.log.sample_steps = (10,)
  config.log.sample_every_steps = 20
  config.log.sample_length = 100


VARIANTS = {'cpu': _cpu, 'cpu15': _cpu15, 'smoke': _smoke}


def get_sweep(arg: str | None = None) -> list[dict]:
  """The trials of `launch.py --sweep`: overrides of get_config(arg), one dict per trial."""
  if 'smoke' in (arg or '').split(','):
    # 2 x 2 in a couple of minutes on 2 CPU cores: two shapes, and two dropout rates per shape
    # (which --fused trains together).
    return sweeps.product(sweeps.axis('model.hidden_size', [16, 32]),
                          sweeps.axis('model.dropout', [0.0, 0.25]))
  return sweeps.product(sweeps.axis('model.num_layers', [1, 2, 3]),
                        sweeps.axis('model.hidden_size', [128, 256, 512]),
                        sweeps.axis('model.dropout', [0.0, 0.25, 0.5]))
