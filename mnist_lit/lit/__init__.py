"""Lightning's layer: the LightningModule, the DataModule and its samplers, the stack of networks,
and the callbacks (history, checkpoints, progress). It builds on nn/ and reads no config: the
builder (runs/build.py) makes its objects from one."""
