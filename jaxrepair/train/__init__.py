"""Training: losses, SFT data and entry point, the shared loop, checkpoints, GRPO."""
