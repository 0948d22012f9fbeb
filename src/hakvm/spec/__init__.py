"""hakvm.spec."""
