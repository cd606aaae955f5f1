"""The commands that read runs: sampling, neurons, novelty, comparing runs."""
