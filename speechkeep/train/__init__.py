"""Training: typed config, training data (tasks, mixtures, length-grouped batches), the loop, checkpoints."""
