"""Each setting's policies are declared once, beside it in config/schema.py, and resume, the stacked
launcher and the builder read them from there: adding a setting is adding its field."""

import dataclasses
from dataclasses import dataclass, field

from mnist_lit.common.choices import OWNED_BY_PROJECT
from mnist_lit.config import schema
from mnist_lit.config.schema import Config, Resume, Stacked, Taker, TrainerConfig, argument, policies, taken_by


def test_a_resume_keeps_the_training_and_changes_when_it_stops_what_it_shows_and_the_learning_rate(monkeypatch):
    from mnist_lit.config.checkpoints import resumed_as

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


def test_an_argument_lightning_adds_to_its_trainer_is_a_setting_with_nothing_added(monkeypatch):
    """As a Lightning release would add one: Lightning's default, run alone in a stack, kept by a
    resume; and a declared argument that names no default takes Lightning's."""
    from mnist_lit.config.checkpoints import resumed_as
    from mnist_lit.lit.internals import trainer_arguments

    monkeypatch.setattr(schema, "trainer_arguments", lambda: {**trainer_arguments(), "new_flag": False, "new": 3})

    @dataclass
    @schema.lightnings_arguments
    class NewerTrainer:
        strategy: str = argument(resume=Resume.FROM_HERE_ON)

    fields = {each.name: each for each in dataclasses.fields(NewerTrainer)}
    assert set(fields) == set(trainer_arguments()) - set(OWNED_BY_PROJECT) | {"new_flag", "new"}
    assert (fields["new"].default, fields["new_flag"].type, fields["strategy"].default) == (3, bool, "auto")

    @dataclass
    class NewerConfig(Config):
        trainer: NewerTrainer = field(default_factory=NewerTrainer)

    monkeypatch.setattr(schema, "Config", NewerConfig)
    monkeypatch.setattr(schema, "TrainerConfig", NewerTrainer)
    assert resumed_as("trainer.new") == Resume.SAME and policies("stack")["trainer.new"] == Stacked.ALONE
    assert {"new", "new_flag", "strategy"} <= set(taken_by(Taker.LIGHTNING))
