"""What every stage needs: errors and console output, the cache folder, whether the hub is reachable."""
