"""hakvm: two-node active/active KVM high-availability clusters from one declarative spec."""

__version__ = "0.1.0"
