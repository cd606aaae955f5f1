r"""The model zoo on tiny Shakespeare: each model at about 0.8M parameters, on one interface.

One variant per variant a model declares (its module in seqlab/models/, or a model from
outside the package once its module is imported: `registry.Variant`); each replaces
`config.model` of configs/shakespeare.py's `:cpu` config (data, batches, schedule and logging;
2 CPU devices) with that model's fields. Then the named recipes below (hawk_cpu15, nanogpt,
feng_*). docs/zoo.md gives each model's equations, source and measured numbers.

  python launch.py --config configs/zoo.py:mingru --workdir runs/zoo-mingru
  python launch.py --config configs/zoo.py:minlstm
  python launch.py --config configs/zoo.py:hawk
  python launch.py --config configs/zoo.py:hawk_cpu15   # the study's best: Hawk at 5M, 15 min
  python launch.py --config configs/zoo.py:mamba
  python launch.py --config configs/zoo.py:gpt       # 4x128, context 64, random windows
  python launch.py --config configs/zoo.py:lstm      # the 2x256 LSTM of shakespeare.py:cpu
  python launch.py --config configs/zoo.py:nanogpt   # nanoGPT's shakespeare_char baby GPT
                                                     # with its train.py settings (a GPU run)
  python launch.py --config configs/zoo.py:feng_mingru   # Feng et al. 2024's setting (GPU
  python launch.py --config configs/zoo.py:feng_minlstm  # runs): 3x384, dropout 0.2, clip 0.25,
  python launch.py --config configs/zoo.py:feng_mamba    # 5,000 steps of 64 x 256; all four:
  python launch.py --config configs/zoo.py:feng_gpt      # experiments/zoo/feng.sh

Add `,smoke` for a tiny, short version of any of them (`configs/zoo.py:mamba,smoke`).
Override any field: `--config.model.d_state=32`. A model's fields are exactly those of its
config dataclass (its module in seqlab/models/); another model's field is an error.
"""

import copy

from ml_collections import config_dict

from configs import shakespeare
from seqlab.models import gpt
from seqlab.models import registry


def _model(name: str, **fields) -> config_dict.ConfigDict:
  """A zoo model group: fp32 matmuls unless --config.model.matmul_dtype=bfloat16."""
  return config_dict.ConfigDict({'name': name, 'matmul_dtype': 'float32', **fields})


def _declared(variant: str):
  """The variant a model declares (seqlab/models/<model>.py: registry.Variant): every field of
  its model group (defaults filled, so each can be overridden), plus the config keys it sets.
  A model with a window (the GPT) reads random windows of its context."""
  model, declared = registry.variants()[variant]

  def apply(config):
    config.model = config_dict.ConfigDict(
        {'name': model.name, **registry.source_field(model), **registry.defaults(model.name),
         **declared.zoo_fields})
    for key, value in declared.config.items():
      group, field = key.split('.')
      config[group][field] = value
    window = registry.window(registry.config_of(config.model, vocab_size=1))
    if window is not None:
      config.data.batching = 'windows'
      config.data.seq_len = config.eval.window = window
  apply.__doc__ = declared.doc
  return apply


def _hawk_cpu15(config):
  """The equal-compute study's best recipe under both protocols (experiments/zoo): Hawk at
  about 5M parameters (4 blocks of width 296), 15 minutes of train steps on the 2-core CPU by
  the study's budget (1,517 steps of 593 ms), at the 0.8M sweep's lr 0.004, without dropout.
  Its run is experiments/zoo/runs/hawk-5M-s0.

  Measured (2-core CPU, 2026-12-01; 899 s of train steps, 18m56s in all): val loss 1.4331
  nats/char under the stream protocol, 1.4775 +- 0.0125 over windows of 256 from the zero state
  (nanoGPT's protocol, where its baby GPT has 1.4697). Trained on windows of 256 instead
  (runs/hawk-5M-windows-s0): 1.4665 and 1.4808, a tie under windows.
  """
  VARIANTS['hawk'](config)
  config.model.num_layers, config.model.width = 4, 296
  config.optim.learning_rate = 4e-3
  config.optim.warmup_steps = 151  # a tenth of the steps (the study's rule under 2,000 steps)
  config.train.num_steps = 1517
  config.eval.every_steps = config.log.checkpoint_every_steps = 152  # 10 evaluations


def _windows_and_nanogpt_optimizer(config, window: int | None = None):
  """Random windows of `window` tokens (default: the model's context), in training and
  evaluation, and nanoGPT's AdamW: lr 1e-3, b2 0.99, weight decay 0.1 on matrices, clip 1.0."""
  config.data.batching = 'windows'
  config.data.seq_len = config.eval.window = window or config.model.context
  for key, value in gpt.NANOGPT_OPTIMIZER.items():
    group, field = key.split('.')
    config[group][field] = value


def _nanogpt(config):
  """nanoGPT's config/train_shakespeare_char.py: the baby GPT (6x384, 6 heads, context 256,
  dropout 0.2, no biases, tied embedding) and its train.py: AdamW (b2 0.99, weight decay 0.1
  on matrices), lr 1e-3 with 100 warmup steps and cosine decay to 1e-4 over 5,000 steps,
  clip 1.0, batch 64 x 256; evaluated on every 256-window of the val split (nanoGPT: 200 random
  val windows)."""
  config.model = _model('gpt', num_layers=6, num_heads=6, width=384, context=256, dropout=0.2,
                        bias=False)
  _shakespeare_char_training(config)


def _shakespeare_char_training(config, window: int | None = None):
  """nanoGPT's train_shakespeare_char.py run: batch 64 of random windows of `window` (default:
  the model's context; nanoGPT's is 256), AdamW
  (`_windows_and_nanogpt_optimizer`), 100 warmup steps, cosine decay to 0.1 of the peak over
  5,000 steps; every device of the host (one per core on a CPU); evaluated every 250 steps."""
  _windows_and_nanogpt_optimizer(config, window)
  config.data.batch_size = 64
  config.parallel.cpu_devices = 0
  config.optim.warmup_steps = 100
  config.optim.final_lr_fraction = 0.1
  config.train.num_steps = 5000
  config.eval.every_steps = 250


# Feng et al. 2024 ("Were RNNs All We Needed?", arXiv:2410.01201), their shakespeare_char
# experiment (section 4 and appendix), as far as the paper states it: nanoGPT's shakespeare_char
# data and split (1,003,854 train / 111,540 "test", nanoGPT's val; seqlab's tiny Shakespeare with
# val_fraction 0.1 is exactly that split, and its val is their test); every model 3 layers,
# width 384, dropout 0.2; AdamW lr 1e-3, batch 64, 5,000 steps, gradient clipping 0.25; test loss
# every 25 steps, the best reported. Not stated there, so nanoGPT's train_shakespeare_char.py
# settings (as :nanogpt): windows of 256, b2 0.99, weight decay 0.1 on matrices, 100 warmup
# steps, cosine decay to 1e-4. Also not stated: parameter counts, and how the test loss was
# computed (nanoGPT's estimate_loss: 200 random windows of 256). Here: a full pass over val every
# 250 steps (--config.eval.every_steps=25 for theirs, at 10x the evaluation time), under both
# protocols: every window of 256 from the zero state (val_loss_windows, the closer to theirs)
# and the carried-state stream (val_loss_stream; the GPT's: sliding windows of 256 scoring their
# second half). Reported test losses: minGRU 1.548 (best step 575), minLSTM 1.555 (625), Mamba
# 1.575 (400), Transformer 1.547 (2,000). All four: experiments/zoo/feng.sh on one GPU.


def _feng_min_rnn(config, cell='mingru'):
  """Feng et al.'s minGRU (1.548 reported, best at step 575; the setting: the comment above):
  3 blocks of "Conv4 -> minRNN -> MLP" with residual connections, normalisation and a
  down-projection, expansion 2: here min_rnn.py's pre-RMSNorm residual blocks with a causal
  depthwise conv of width 4 before the gates (conv_width), a log-space minGRU of state 768
  (expansion 2), the down-projection 768 -> 384, a 4x GELU MLP, dropout 0.2, an untied decoder.
  Not matched exactly (the paper does not say): where the conv sits and whether it has its own
  activation, residual or norm; the norm (RMSNorm here); the MLP's size and activation (4x GELU
  here); initialisers (Flax's defaults; the conv's are PyTorch's); the context (256 assumed).
  `:feng_minlstm` is the same with minLSTM (1.555 reported, best at step 625).
  Parameters (measured, registry.count_params at vocabulary 65): minGRU 6,263,105; minLSTM
  7,150,145 (the conv: 1,920 per layer).
  Not yet run: a GPU run (about 2 minutes on one H200: an estimate from its 3.1 / 3.5 PFLOP of
  matmuls, not a measurement), or about 6 hours (minGRU) / 7 hours (minLSTM) on the 2-core CPU
  (seqlab.cpu_estimate's rate, elementwise work not counted).
  """
  config.model = _model('min_rnn', cell=cell, num_layers=3, width=384, expansion=2.0,
                        mlp_ratio=4.0, conv_width=4, dropout=0.2, scan='associative',
                        log_space=True)
  _feng_training(config)


def _feng_minlstm(config):
  _feng_min_rnn(config, cell='minlstm')


def _feng_mamba(config):
  """Feng et al.'s Mamba (1.575 reported, best at step 400; the setting above `_feng_min_rnn`):
  3 layers, width 384, SSM state expansion (d_state) 16, block expansion 2; here mamba.py
  (state-spaces/mamba's block: conv 4, dt_rank 384/16 = 24, RMSNorm, no MLP, tied head) with
  dropout 0.2 on each mixer's output. Not matched exactly (the paper does not say): which Mamba
  implementation and block (with or without an MLP), where dropout goes; the context (256
  assumed). scan='associative' (speed only; on a GPU it should beat lax.scan's 256 steps, and
  it holds 64 x 256 x 768 x 16 floats per layer; --config.model.scan=sequential on a CPU).
  Parameters (measured, registry.count_params at vocabulary 65): 2,918,016 (no MLP in
  mamba.py's block: about 0.47x the minGRU's; the paper gives no counts to match).
  Not yet run: a GPU run (about 2-3 minutes on one H200: an estimate, not a measurement; the
  associative scan is memory-bound), or about 3 hours on the 2-core CPU (seqlab.cpu_estimate's
  rate with the sequential scan, elementwise work not counted).
  """
  config.model = _model('mamba', num_layers=3, width=384, d_state=16, d_conv=4, expand=2,
                        dt_rank=0, dropout=0.2, scan='associative')
  _feng_training(config)


def _feng_gpt(config):
  """Feng et al.'s Transformer (1.547 reported, best at step 2,000: about 2.5x the steps of the
  others; the setting above `_feng_min_rnn`): 3 layers, width 384, 6 heads, dropout 0.2; here
  nanoGPT's GPT (gpt.py, as :nanogpt with 3 layers instead of 6): context 256, learned
  positions, no biases (train_shakespeare_char's bias=False), tied head. Not matched exactly
  (the paper does not say): the context (256 assumed, nanoGPT's block_size) and the biases.
  Parameters (measured, registry.count_params at vocabulary 65, positions included): 5,434,368.
  Not yet run: a GPU run (about 2 minutes on one H200: an estimate from its 2.9 PFLOP, not a
  measurement), or about 5-6 hours on the 2-core CPU (seqlab.cpu_estimate's rate).
  """
  config.model = _model('gpt', num_layers=3, num_heads=6, width=384, context=256, dropout=0.2,
                        bias=False)
  _feng_training(config)


def _feng_training(config):
  """nanoGPT's shakespeare_char run (`_shakespeare_char_training`) with Feng et al.'s gradient
  clipping of 0.25."""
  _shakespeare_char_training(config, window=256)
  config.optim.grad_clip = 0.25


def _smoke(config):
  """Tiny and short (shakespeare.py:smoke's schedule) for tests and a first look."""
  model = copy.deepcopy(config.model)
  shakespeare.VARIANTS['smoke'](config)
  config.model = model
  for field, value in (('num_layers', 2), ('width', 16), ('hidden_size', 32), ('num_heads', 2)):
    if field in config.model:
      config.model[field] = value
  if 'context' in config.model:
    config.model.context = config.data.seq_len = config.eval.window = 32
  config.parallel.cpu_devices = 1


# The generic variant of every registered model (its declaration), then the named recipes.
VARIANTS = {name: _declared(name) for name in registry.variants()}
VARIANTS.update({'hawk_cpu15': _hawk_cpu15, 'nanogpt': _nanogpt, 'feng_mingru': _feng_min_rnn,
                 'feng_minlstm': _feng_minlstm, 'feng_mamba': _feng_mamba,
                 'feng_gpt': _feng_gpt, 'smoke': _smoke})


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
  if not arg or arg.split(',')[0] not in VARIANTS or arg.split(',')[0] == 'smoke':
    raise ValueError('configs/zoo.py needs a model first: configs/zoo.py:MODEL[,smoke] with '
                     f'MODEL one of {", ".join(v for v in VARIANTS if v != "smoke")}')
  return shakespeare.apply_variants(shakespeare.get_config('cpu'), arg, VARIANTS,
                                    'configs/zoo.py')
