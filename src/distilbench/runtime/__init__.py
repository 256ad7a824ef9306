"""Running a trained model: the inference loop, backends, `auto`, the machine probe, export, predict."""
