"""hakvm.lab."""
