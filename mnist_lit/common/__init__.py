"""What every layer uses, importing nothing of torch, Lightning or Hydra: the names a config may
choose, the errors a user can fix, and files written whole."""
