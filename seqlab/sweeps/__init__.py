"""Sweeps: declared next to a config (`declare`), run as processes, fused groups or Ray tasks.

Config files declare a sweep with `from seqlab import sweeps` and
`sweeps.product(sweeps.axis('optim.learning_rate', [1e-3, 2e-3]), ...)`, or a search over
ranges with `sweeps.random` / `sweeps.quasi_random` and `uniform`, `log_uniform`, `integer`,
`choice` (`space`: numpy, imported only when sampling).
`runner` runs the trials (`ray_tasks` on Ray), each in a process of its own
(`python -m seqlab.sweeps.trial`) that gets its complete config as data
(`handoff`); `record` keeps sweep.json and `hparams` the TensorBoard experiment;
`halving` decides which trials early stopping (`--early_stop`) stops at a rung.
Only the trials' processes import JAX (`fused`, `seqlab.train`): a sweep's own
process stays light.
"""

from seqlab.sweeps.declare import axis, chain, fixed, product, zipped
from seqlab.sweeps.space import choice, integer, log_uniform, quasi_random, random, uniform

__all__ = ['axis', 'chain', 'choice', 'fixed', 'integer', 'log_uniform', 'product',
           'quasi_random', 'random', 'uniform', 'zipped']
