"""Each setting's policies are declared once, beside it in config/schema.py, and resume, the stacked
launcher and the builder read them from there: adding a setting is adding its field."""

from dataclasses import dataclass, field

from mnist_lit.config import schema
from mnist_lit.config.schema import Config, Resume, Stacked, Taker, TrainerConfig, argument, policies, taken_by


def test_a_resume_keeps_the_training_and_changes_when_it_stops_what_it_shows_and_the_learning_rate(monkeypatch):
    from mnist_lit.checkpoint import resumed_as

    assert resumed_as("model.hidden") == resumed_as("data.batch_size") == Resume.SAME
    assert resumed_as("trainer.max_epochs") == resumed_as("early_stopping.patience") == Resume.UNTIL
    assert resumed_as("optimizer.lr") == Resume.FROM_HERE_ON
    assert resumed_as("logger.save_dir") == resumed_as("trainer.enable_progress_bar") == Resume.UNSEEN

    @dataclass
    class MoreTrainer(TrainerConfig):
        new_argument: int = argument(3, resume=Resume.UNSEEN, stack=Stacked.SHARED)

    @dataclass
    class MoreConfig(Config):
        trainer: MoreTrainer = field(default_factory=MoreTrainer)

    # One field, and every reader knows what to do with it.
    monkeypatch.setattr(schema, "Config", MoreConfig)
    monkeypatch.setattr(schema, "TrainerConfig", MoreTrainer)
    assert resumed_as("trainer.new_argument") == Resume.UNSEEN
    assert policies("stack")["trainer.new_argument"] == Stacked.SHARED
    assert "new_argument" in taken_by(Taker.LIGHTNING)
