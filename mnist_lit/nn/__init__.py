"""The torch-only layer: the networks, the losses, the training engine's forms and the stacked
network. It imports neither Lightning nor Hydra; the layers above hand it plain objects."""
