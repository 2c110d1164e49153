"""What a Hydra multirun adds to a run: the summary at its end, resuming it, and the stacked
launcher's logic (hydra_plugins/mnist_lit_stacked_launcher holds the launcher itself)."""
