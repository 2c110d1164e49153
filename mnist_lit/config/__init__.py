"""The typed configuration that conf/ composes with, and every check a config passes before any
work starts, whether Hydra composed it or a checkpoint holds it."""
