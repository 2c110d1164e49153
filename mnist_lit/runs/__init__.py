"""The application: one run built from its config and trained (build.py, train.py), its share of
the machine, a stack of runs trained as one, and a trained run loaded to predict."""
