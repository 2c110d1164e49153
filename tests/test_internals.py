"""The libraries' internals mnist_lit relies on, for want of a public API, each in one module per
library (lit/internals.py for Lightning; sweeps/launchers.py for Hydra; nn/adam.py for torch;
command_line.py for CPython): a test each that fails naming what moved, and a count that keeps
anything else out."""

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.optim.adam import adam as adam_function

from mnist_lit.lit.internals import (
    NOTICES,
    WARNINGS,
    carry_optimizer_steps,
    count_optimizer_steps,
    detects_anomalies,
    trainer_arguments,
)
from mnist_lit.nn import adam as adam_module

ROOT = Path(__file__).parents[1]


class Counting(L.LightningModule):
    """Takes three optimizer steps a batch out of Lightning's sight, as the engine does."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx) -> None:
        try:
            count_optimizer_steps(self.trainer, 3)
        except AttributeError as error:
            pytest.fail(f"Lightning moved fit_loop.epoch_loop.manual_optimization.optim_step_progress: {error}")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters())


def test_lightnings_optimizer_step_counter_is_where_the_engine_counts_its_steps():
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(Counting(), torch.utils.data.DataLoader(torch.zeros(2, 1)))
    assert trainer.global_step == 6, "Lightning's global_step no longer reads manual optimization's step progress"


class Automatic(L.LightningModule):
    """One optimizer step a batch, Lightning's way, going on from a manual run's checkpoint."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.weight - 1).square().sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters())

    def on_load_checkpoint(self, checkpoint):
        carry_optimizer_steps(checkpoint, automatic=True)


def test_a_checkpoint_keeps_each_optimizations_step_count_where_the_other_reads_it(tmp_path):
    quiet = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}
    manual = L.Trainer(max_epochs=1, enable_checkpointing=False, **quiet)
    manual.fit(Counting(), torch.utils.data.DataLoader(torch.zeros(2, 1)))
    manual.save_checkpoint(tmp_path / "manual.ckpt")
    loop = torch.load(tmp_path / "manual.ckpt", weights_only=True)["loops"]["fit_loop"]
    moved = {
        "epoch_loop.manual_optimization.optim_step_progress",
        "epoch_loop.automatic_optimization.optim_progress",
    } - loop.keys()
    assert not moved, f"Lightning moved the step counts that lit/internals.py carry_optimizer_steps reads: {moved}"
    automatic = L.Trainer(max_epochs=2, enable_checkpointing=False, **quiet)
    automatic.fit(Automatic(), torch.utils.data.DataLoader(torch.zeros(2, 1)), ckpt_path=tmp_path / "manual.ckpt")
    assert automatic.global_step == 6 + 2, "the steps of the manual run were not carried over"


def test_the_trainer_keeps_its_detect_anomaly_argument_where_the_module_reads_it():
    try:
        said = [detects_anomalies(L.Trainer(detect_anomaly=value, logger=False)) for value in (True, False)]
    except AttributeError as error:
        pytest.fail(f"Lightning moved Trainer._detect_anomaly (lit/internals.py detects_anomalies): {error}")
    assert said == [True, False]


def test_lightnings_ddp_builds_a_ranks_command_from_sys_argv_under_hydra():
    from lightning.fabric.strategies.launchers import subprocess_script

    built = getattr(subprocess_script, "_hydra_subprocess_cmd", None)
    assert built is not None, "Lightning moved _hydra_subprocess_cmd (subprocess_script): see command_of_further_ranks"
    source = inspect.getsource(built)
    assert "sys.argv[1:]" in source and "hydra.run.dir" in source, (
        "Lightning's _hydra_subprocess_cmd no longer re-runs sys.argv[1:] with hydra.run.dir"
    )


def _sources(*packages: str) -> str:
    return "".join(
        path.read_text(errors="ignore")
        for package in packages
        for path in Path(__import__(package).__file__).parent.rglob("*.py")
    )


def test_the_notices_and_warnings_silenced_by_their_text_are_still_said():
    said = _sources("lightning") + Path(torch.utils._pytree.__file__).read_text()
    texts = [text for logger, starts in NOTICES.items() if logger.startswith("lightning") for text in starts]
    texts += [max(re.sub(r"\\d\+", "", message).replace("\\", "").split("()"), key=len) for message, _ in WARNINGS]
    if not hasattr(torch.utils._pytree, "treespec_leaf"):
        # A torch before 2.9 has neither the replacement nor the deprecation it names: nothing to say.
        texts = [text for text in texts if "treespec" not in text]
    gone = [text for text in texts if text not in said]
    assert not gone, f"Lightning no longer says {gone}: drop them from lit/internals.py"


def test_the_trainers_arguments_read_from_lightnings_source_are_its_signatures():
    signature = inspect.signature(L.Trainer.__init__).parameters
    assert trainer_arguments() == {name: p.default for name, p in signature.items() if name != "self"}, (
        "Lightning moved Trainer.__init__'s keyword arguments (lit/internals.py trainer_arguments)"
    )


def test_hydras_override_parser_tells_which_overrides_sweep():
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(["seed=1,2", "model=mlp", "x=range(3)"])
    except (ImportError, AttributeError) as error:
        pytest.fail(f"Hydra moved OverridesParser (sweeps/launchers.py CheckLauncher): {error}")
    assert [(o.key_or_group, o.is_sweep_override()) for o in parsed] == [
        ("seed", True),
        ("model", False),
        ("x", True),
    ]


def test_adams_state_is_as_nn_adam_writes_and_reads_it():
    weight = torch.nn.Parameter(torch.ones(3))
    adam = torch.optim.Adam([weight], fused=True)
    weight.grad = torch.ones(3)
    adam.step()
    assert set(adam.state[weight]) == {"step", "exp_avg", "exp_avg_sq"}, (
        f"torch's Adam keeps {set(adam.state[weight])}; nn/adam.py writes step, exp_avg, exp_avg_sq"
    )
    read = {*adam_module.SETTINGS, "betas"}
    assert read <= adam.param_groups[0].keys(), f"torch's Adam settings lack {read - adam.param_groups[0].keys()}"
    given = adam_module.settings(adam.param_groups[0]).keys() | {"lr"}
    functional = inspect.signature(adam_function).parameters
    assert given <= functional.keys(), f"torch.optim.adam.adam takes no {given - functional.keys()}"


@pytest.mark.parametrize("optimizer", [torch.optim.Adam, torch.optim.AdamW])
def test_the_fused_kernel_steps_as_torchs_fused_adam_steps(optimizer):
    weight = torch.nn.Parameter(torch.linspace(-1, 1, 6))
    mine = torch.nn.Parameter(weight.detach().clone())
    theirs = optimizer([weight], lr=0.1, eps=1e-7, weight_decay=0.01, fused=True)
    made = optimizer([mine], lr=0.1, eps=1e-7, weight_decay=0.01, fused=True)
    for grad in (torch.ones(6), torch.arange(6.0)):
        weight.grad, mine.grad = grad, grad.clone()
        theirs.step()
        group = made.param_groups[0]
        exp_avgs, exp_avg_sqs, steps = adam_module.moments(made, group, [mine])
        steps[0].add_(1)
        try:
            adam_module.fused_kernel([mine], [mine.grad], exp_avgs, exp_avg_sqs, steps, 0.1, group)
        except (AttributeError, TypeError) as error:
            pytest.fail(f"torch moved its fused Adam kernel, torch._fused_adam_ (nn/adam.py fused_kernel): {error}")
    torch.testing.assert_close(mine, weight, rtol=0, atol=0)
    torch.testing.assert_close(made.state[mine]["exp_avg_sq"], theirs.state[weight]["exp_avg_sq"], rtol=0, atol=0)


def test_pythons_exit_handlers_run_as_end_without_teardown_runs_them():
    code = "import atexit, os; atexit.register(print, 'ran'); atexit._run_exitfuncs(); os._exit(0)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout == "ran\n", f"CPython moved atexit._run_exitfuncs (command_line.py): {done.stderr}"


DOORS = {
    ("mnist_lit/command_line.py", "atexit._run_exitfuncs"),
    ("mnist_lit/nn/adam.py", "torch._fused_adam_"),
    ("mnist_lit/nn/adam.py", "torch._fused_adamw_"),
    ("mnist_lit/lit/internals.py", "trainer._detect_anomaly"),
}
HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def test_no_other_private_name_of_a_library_is_used():
    """An underscore name of another library: an attribute (not self's, nor Hydra's _target_-style
    keys) or an import."""
    found = set()
    for path in [*ROOT.joinpath("mnist_lit").rglob("*.py"), *ROOT.joinpath("hydra_plugins").rglob("*.py")]:
        where = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and re.fullmatch(r"_[a-z]\w*", node.attr)
                and node.attr not in HYDRA_KEYS
            ):
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls", "os")):
                    found.add((where, ast.unparse(node)))
            elif isinstance(node, ast.ImportFrom) and not (node.module or "").startswith("mnist_lit"):
                names = [node.module or "", *(alias.name for alias in node.names)]
                found |= {(where, name) for name in names if any(part.startswith("_") for part in name.split("."))}
    assert found == DOORS, f"private names used beyond the named doors: {found - DOORS}"
