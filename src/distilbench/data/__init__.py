"""Input: the one reader of files, tasks and labels, cleaning and splits, built-in data sets."""
