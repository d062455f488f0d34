"""How it is searched: data, the training loop, the objective and the study runner."""
