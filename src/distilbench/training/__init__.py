"""Training: fine-tuning (one checkpoint per epoch), distillation, the linear probe, several processes."""
