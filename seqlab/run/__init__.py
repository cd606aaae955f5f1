"""A run directory: its files, lock, checkpoints, TensorBoard events, the recorder that writes
them while training, and loading a finished run for analysis."""
