"""Training machinery: the trainer, its loop and recipe, losses, VGG, checkpoints, DDP, the run log."""
