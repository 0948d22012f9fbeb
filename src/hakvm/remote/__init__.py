"""hakvm.remote."""
