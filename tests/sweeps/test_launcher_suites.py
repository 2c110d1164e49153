"""Hydra's own launcher test suites, run against hydra/launcher=stacked as Hydra's launcher plugins
(basic, joblib, submitit, rq, ray) run them: jobs of Hydra's test apps, which know nothing of
mnist_lit, launched as the basic launcher launches them. The integration suite starts those apps as
processes of their own, so it also shows that Hydra's plugin scan finds the launcher without
mnist_lit imported. .ci/run runs this file again on a regular (not editable) install."""

from hydra import version
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from pytest import fixture, mark


@fixture(autouse=True)
def no_version_base(hydra_restore_singletons):
    """The suites expect Hydra's compatibility defaults (version_base 1.1: jobs change directory), as
    in a process of their own; the tests before them in this one chose 1.3, which Hydra keeps in a
    singleton (hydra_restore_singletons puts it back after)."""
    version.setbase("1.1")


@mark.parametrize("launcher_name, overrides", [("stacked", [])])
class TestStackedLauncher(LauncherTestSuite):
    pass


@mark.parametrize("task_launcher_cfg, extra_flags", [({}, ["-m", "hydra/launcher=stacked"])])
class TestStackedLauncherIntegration(IntegrationTestSuite):
    pass
