"""Training: the shared loop with its callbacks (early stopping, checkpoints, logging) and exact-resume
checkpoints."""
