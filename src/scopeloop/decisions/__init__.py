"""decisions layer."""
