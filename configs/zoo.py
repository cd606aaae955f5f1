r"""The model zoo on tiny Shakespeare: each model at about 0.8M parameters, on one interface.

One variant per model; each replaces `config.model` of configs/shakespeare.py's `:cpu`
config (data, batches, schedule and logging; 2 CPU devices) with that model's fields.
docs/zoo.md gives each model's equations, source and measured numbers.

  python launch.py --config configs/zoo.py:mingru --workdir runs/zoo-mingru
  python launch.py --config configs/zoo.py:minlstm
  python launch.py --config configs/zoo.py:hawk
  python launch.py --config configs/zoo.py:mamba
  python launch.py --config configs/zoo.py:gpt       # 4x128, context 64, random windows
  python launch.py --config configs/zoo.py:lstm      # the 2x256 LSTM of shakespeare.py:cpu
  python launch.py --config configs/zoo.py:nanogpt   # nanoGPT's shakespeare_char baby GPT
                                                     # with its train.py settings (a GPU run)

Add `,smoke` for a tiny, short version of any of them (`configs/zoo.py:mamba,smoke`).
Override any field: `--config.model.d_state=32`. A model's fields are exactly those of its
dataclass (seqlab/models/registry.py); another model's field is an error.
"""

import copy

from ml_collections import config_dict

from configs import shakespeare


def _model(name: str, **fields) -> config_dict.ConfigDict:
  """A zoo model group: fp32 matmuls unless --config.model.matmul_dtype=bfloat16."""
  return config_dict.ConfigDict({'name': name, 'matmul_dtype': 'float32', **fields})


def _lstm(config):
  """shakespeare.py:cpu's 2x256 LSTM, unchanged (the zoo's baseline)."""
  del config


def _mingru(config, cell='mingru'):
  """Feng et al. 2024 (minGRU), the paper's log-space form, in pre-norm residual blocks with a
  4x GELU MLP (min_rnn.py). `:minlstm` is the same block with minLSTM (not yet run to the end).

  Measured (2-core CPU, 4,900 steps): val loss 1.4870 (stream), 1.6115 +- 0.0132 over windows
  of 256 (docs/zoo.md, docs/evaluation.md).
  """
  width = 200 if cell == 'mingru' else 192  # about 0.83M parameters either way
  config.model = _model('min_rnn', cell=cell, num_layers=2, width=width, expansion=1.0,
                        mlp_ratio=4.0, dropout=0.0, scan='sequential', log_space=True)
  config.optim.learning_rate = 2e-3


def _minlstm(config):
  _mingru(config, cell='minlstm')


def _hawk(config):
  """De et al. 2024 (Griffin's Hawk): RG-LRU + Conv1D(4) recurrent block, gated 3x MLP,
  RMSNorm, following google-deepmind/recurrentgemma (hawk.py).

  Measured (2-core CPU, 4,900 steps): best val loss 1.5079 at step 4,000 (stream), 1.5464 +-
  0.0136 over windows of 256; it overfits without dropout (docs/zoo.md).
  """
  config.model = _model('hawk', num_layers=2, width=168, lru_width=0, conv_width=4,
                        mlp_expansion=3, dropout=0.0, scan='sequential')
  config.optim.learning_rate = 2e-3


def _mamba(config):
  """Gu and Dao 2023: Mamba blocks (expand 2, d_state 16, conv 4, dt_rank width/16) with
  RMSNorm, no MLP, following state-spaces/mamba mamba_simple.py (mamba.py). Not yet run to
  the end on tiny Shakespeare (about 50 minutes on the 2-core CPU)."""
  config.model = _model('mamba', num_layers=4, width=168, d_state=16, d_conv=4, expand=2,
                        dt_rank=0, dropout=0.0, scan='sequential')
  config.optim.learning_rate = 2e-3


def _gpt(config):
  """A small nanoGPT (4 layers, 4 heads, width 128, context 64), as nanoGPT's README runs
  shakespeare_char on a CPU, with AdamW (weight decay 0.1 on matrices) on random windows.

  Measured (2-core CPU, 4,900 steps): val loss 1.5497 +- 0.0076 over windows of 64 from the
  zero state, 1.5100 under `stream` (sliding windows of 64 scoring their second half).
  """
  config.model = _model('gpt', num_layers=4, num_heads=4, width=128, context=64, dropout=0.0,
                        bias=False)
  _windows_and_nanogpt_optimizer(config)


def _windows_and_nanogpt_optimizer(config):
  """Random windows of the model's context (training and evaluation), and nanoGPT's
  AdamW: lr 1e-3, b2 0.99, weight decay 0.1 on matrices, clip 1.0."""
  config.data.batching = 'windows'
  config.data.seq_len = config.eval.window = config.model.context
  config.optim.name = 'adamw'
  config.optim.learning_rate = 1e-3
  config.optim.b2 = 0.99
  config.optim.weight_decay = 0.1
  config.optim.decay = 'matrices'
  config.optim.grad_clip = 1.0


def _nanogpt(config):
  """nanoGPT's config/train_shakespeare_char.py: the baby GPT (6x384, 6 heads, context 256,
  dropout 0.2, no biases, tied embedding) and its train.py: AdamW (b2 0.99, weight decay 0.1
  on matrices), lr 1e-3 with 100 warmup steps and cosine decay to 1e-4 over 5,000 steps,
  clip 1.0, batch 64 x 256; evaluated on every 256-window of the val split (nanoGPT: 200 random
  val windows)."""
  config.model = _model('gpt', num_layers=6, num_heads=6, width=384, context=256, dropout=0.2,
                        bias=False)
  _windows_and_nanogpt_optimizer(config)
  config.data.batch_size = 64
  config.parallel.cpu_devices = 0
  config.optim.warmup_steps = 100
  config.optim.final_lr_fraction = 0.1
  config.train.num_steps = 5000
  config.eval.every_steps = 250


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


VARIANTS = {'lstm': _lstm, 'mingru': _mingru, 'minlstm': _minlstm, 'hawk': _hawk,
            'mamba': _mamba, 'gpt': _gpt, 'nanogpt': _nanogpt, 'smoke': _smoke}


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
  if not arg or arg.split(',')[0] not in VARIANTS or arg.split(',')[0] == 'smoke':
    raise ValueError('configs/zoo.py needs a model first: configs/zoo.py:MODEL[,smoke] with '
                     f'MODEL one of {", ".join(v for v in VARIANTS if v != "smoke")}')
  return shakespeare.apply_variants(shakespeare.get_config('cpu'), arg, VARIANTS,
                                    'configs/zoo.py')
