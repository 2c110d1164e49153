"""What a config may choose by name, known without importing torch or Lightning, so that a bad
override is answered at once (config/ checks against these; nn/network.py builds from them)."""

# The elementwise torch.nn activations that take no arguments, by lower-case name. Softmax and its
# kin mix units and GLU halves them, so they are no hidden-layer activations. tests/nn/test_network.py
# checks this table against torch.nn.
ACTIVATIONS = {
    "celu": "CELU",
    "elu": "ELU",
    "gelu": "GELU",
    "hardshrink": "Hardshrink",
    "hardsigmoid": "Hardsigmoid",
    "hardswish": "Hardswish",
    "hardtanh": "Hardtanh",
    "leakyrelu": "LeakyReLU",
    "logsigmoid": "LogSigmoid",
    "mish": "Mish",
    "prelu": "PReLU",
    "relu": "ReLU",
    "relu6": "ReLU6",
    "rrelu": "RReLU",
    "selu": "SELU",
    "sigmoid": "Sigmoid",
    "silu": "SiLU",
    "softplus": "Softplus",
    "softshrink": "Softshrink",
    "softsign": "Softsign",
    "tanh": "Tanh",
    "tanhshrink": "Tanhshrink",
}
INITS = ("keras", "torch")

# Gradient scaling (16-mixed) is not wired into the engine's plain and captured forms; bf16 and full
# precision need none. 64-true is not offered: the DataModule keeps its images in float32 on the
# device and the engine gathers each mini-batch from them, past Lightning's conversion of batches.
PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16-true")

# Lightning's profilers by name (Trainer(profiler=...)); None: none.
PROFILERS = (None, "simple", "advanced", "pytorch")

# Lightning's accelerators that the engine runs on (the captured form on CUDA GPUs).
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")

# What History records each epoch, as Keras names it.
METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")

# torchvision's data sets of 28×28 grey images in ten classes, in MNIST's IDX files (lit/data.py reads them).
DATASETS = ("MNIST", "FashionMNIST", "KMNIST")

# Lightning's strategies that spread the engine's steps over processes, gradients all-reduced per mini-batch.
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")

# Who trains a run (the `engine` setting): Lightning's own loop; the fast engine (Keras's
# steps_per_execution, captured as CUDA graphs on a GPU); or auto, the fast engine unless the run
# asks for what only Lightning's loop does (config/checks.py `lightnings_own`).
ENGINES = ("auto", "lightning", "fast")

# The loggers of the logger group (by Lightning class) and the library and extra each needs.
LOGGER_LIBRARIES = {
    "lightning.pytorch.loggers.TensorBoardLogger": ("tensorboard", "tensorboard"),
    "lightning.pytorch.loggers.MLFlowLogger": ("mlflow", "mlflow"),
    "lightning.pytorch.loggers.WandbLogger": ("wandb", "wandb"),
}

# What a config may name by `_target_`, and where: the project's own choices. A config from a file
# (a checkpoint's) is data: its classes are looked up here, never imported by the name it gives, and
# nothing else in it is called. config.check_targets enforces this when composing and when loading.
# The losses that take logits and class labels, by the name the Classifier takes (conf/loss has the
# tutorial's two); tests/nn/test_loss.py trains with each.
LOSSES = {
    "categorical": "mnist_lit.nn.loss.CategoricalCrossentropy",
    "sparse": "torch.nn.CrossEntropyLoss",
    "multi_margin": "torch.nn.MultiMarginLoss",
}
# Optimizers that take Adam's lr, betas and eps, and have the fused step the captured form records.
OPTIMIZERS = {"adam": "torch.optim.Adam", "adamw": "torch.optim.AdamW"}
TARGETS = {
    "model": ("mnist_lit.nn.network.DenseNetwork",),
    "loss": tuple(LOSSES.values()),
    "optimizer": tuple(OPTIMIZERS.values()),
    "data": ("mnist_lit.lit.data.MNISTDataModule",),
    "trainer": ("lightning.pytorch.Trainer",),
    "logger": tuple(LOGGER_LIBRARIES),
}
# Where the project's own classes were before the package took its layers (nn/, lit/): a
# checkpoint saved then names them so, and is read as naming them here.
MOVED = {
    "mnist_lit.network.DenseNetwork": "mnist_lit.nn.network.DenseNetwork",
    "mnist_lit.loss.CategoricalCrossentropy": "mnist_lit.nn.loss.CategoricalCrossentropy",
    "mnist_lit.data.MNISTDataModule": "mnist_lit.lit.data.MNISTDataModule",
}
TARGET_KINDS = {
    "model": "networks",
    "loss": "losses",
    "optimizer": "optimizers",
    "data": "data modules",
    "trainer": "trainers",
    "logger": "loggers",
}

# lightning.Trainer's arguments that are no setting. config/schema.py's TrainerConfig holds every
# other one, each with who takes it (tests/lit/test_trainer.py checks this against Lightning's signature).

# Set by mnist_lit itself, and where a user sets what they carry.
OWNED_BY_PROJECT = {
    "logger": "choose one with logger=tensorboard or logger=mlflow",
    "callbacks": "give them to fit(..., callbacks=[...]); early stopping is early_stopping.patience=3",
    "plugins": "mnist_lit writes checkpoints whole with its own; choose precision with trainer.precision",
    "default_root_dir": "it is the run's directory: set hydra.run.dir",
}
# The stages of Lightning's loops, as its limit_<stage>_batches name them.
STAGES = ("train", "val", "test", "predict")
