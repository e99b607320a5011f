"""acquisition layer."""
