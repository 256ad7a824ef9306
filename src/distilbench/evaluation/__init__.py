"""Evaluation: metrics, bootstrap intervals, paired verdicts, trivial baselines."""
