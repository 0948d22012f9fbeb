"""hakvm.ops."""
