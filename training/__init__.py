"""Training side of diffdefect-edge: run from the checkout with ``python -m training``."""
