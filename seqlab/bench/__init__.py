"""Benchmarks of seqlab against its peers: `python -m seqlab.bench` (see `main`)."""
