"""hakvm.deploy."""
