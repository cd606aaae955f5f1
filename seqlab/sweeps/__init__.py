"""Sweeps: declared next to a config (`declare`), run as processes, fused groups or Ray tasks.

Config files declare a sweep with `from seqlab import sweeps` and
`sweeps.product(sweeps.axis('optim.learning_rate', [1e-3, 2e-3]), ...)`.
This package imports no JAX: a sweep's parent process stays light.
"""

from seqlab.sweeps.declare import axis, chain, fixed, product, zipped

__all__ = ['axis', 'chain', 'fixed', 'product', 'zipped']
