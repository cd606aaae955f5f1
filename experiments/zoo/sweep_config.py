r"""The equal-compute study's learning-rate and dropout sweep: configs/zoo.py with a get_sweep.

  python launch.py --config experiments/zoo/sweep_config.py:mingru --sweep \
      --workdir experiments/zoo/runs/sweeps/mingru --config.train.num_steps=N ...

`python -m experiments.zoo.study sweep` runs it for every model at 0.8M with a third of the
model's step budget (experiments/zoo/README.md). The config is configs/zoo.py's variant,
unchanged (`,smoke` works too); the sweep is each model's own learning rate times
`LR_FACTORS` (and `WIDENED`'s, where the best was at an edge) crossed with `DROPOUTS`.
"""

from configs import zoo
from seqlab import sweeps

LR_FACTORS = (0.5, 1.0, 2.0)  # times the variant's learning rate
DROPOUTS = (0.0, 0.1)
# The rule (experiments/zoo/README.md): where a model's best trial has the largest or smallest
# learning rate swept, its sweep is widened by one more factor of 2 that way (`pick` says so),
# and again until the best is inside. Each widening, with the result that called for it:
WIDENED = {
    'lstm': (4.0,),  # 2026-12-01: best 1.4971 at x2 (0.01); x1 1.5188, x0.5 1.6359
    'mingru': (4.0,),  # 2026-12-01: best 1.4969 at x2 (0.004); x1 1.5023, x0.5 1.5444
    'minlstm': (4.0,),  # 2026-12-01: best 1.4955 at x2 (0.004); x1 1.5106, x0.5 1.5434
    'hawk': (4.0,),  # 2026-12-01: best 1.4669 at x2 (0.004); x1 1.4816, x0.5 1.5154
    'gpt': (4.0, 8.0),  # 2026-12-02: best 2.0005 at x2 (0.002); x1 2.1331, x0.5 2.2608;
    # then best 1.8414 at x4 (0.004)
}

# The models added after the plan (entries.NEW_MODELS): three learning rates at dropout 0, a
# third of the budget each. Centred on the rate the plan's sweeps picked for the nearest plan
# model (Hawk, minGRU and minLSTM: 0.004, each with 0.008 losing once widened).
NEW_MODEL_SWEEPS = {
    'lru': (0.002, 0.004, 0.008),  # 2026-12-08; Hawk's pick 0.004
    'gla': (0.002, 0.004, 0.008),  # 2026-12-08; the GPT's and Hawk's 0.004, Mamba's 0.002
}
NEW_MODEL_DROPOUTS = (0.0,)


def get_config(arg: str | None = None):
  return zoo.get_config(arg)


def learning_rates(arg: str | None) -> list[float]:
  model = (arg or '').split(',')[0]
  if model in NEW_MODEL_SWEEPS:
    return list(NEW_MODEL_SWEEPS[model])
  base = zoo.get_config(arg).optim.learning_rate
  factors = sorted(LR_FACTORS + WIDENED.get(model, ()))
  return [float(f'{base * factor:.3g}') for factor in factors]


def get_sweep(arg: str | None = None) -> list[dict]:
  model = (arg or '').split(',')[0]
  dropouts = NEW_MODEL_DROPOUTS if model in NEW_MODEL_SWEEPS else DROPOUTS
  return sweeps.product(sweeps.axis('optim.learning_rate', learning_rates(arg)),
                        sweeps.axis('model.dropout', list(dropouts)))
