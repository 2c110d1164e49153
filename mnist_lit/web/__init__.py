"""The draw-a-digit page and its JSON API (python -m mnist_lit.serve)."""
