"""Speed and size: the measuring protocol behind `bench` and compare's speed columns."""
