"""Command-line interface (top layer).

``scopeloop run | validate | evaluate | train | bench | report``.
"""
