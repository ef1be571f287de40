"""Training data: dataset readers, silence removal, the on-disk cache, training examples, synthesis."""
