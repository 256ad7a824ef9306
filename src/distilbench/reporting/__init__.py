"""Plots and the HTML/Markdown report of a run."""
