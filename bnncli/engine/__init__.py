"""Training, evaluation, checkpoints."""
