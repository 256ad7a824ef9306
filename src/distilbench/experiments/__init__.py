"""Orchestrators over the stages: compare (and train, distill, evaluate) and tune."""
