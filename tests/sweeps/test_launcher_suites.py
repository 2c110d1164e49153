"""Hydra's own launcher test suites, run against hydra/launcher=stacked as Hydra's launcher plugins
(basic, joblib, submitit, rq, ray) run them: jobs of Hydra's test apps, which know nothing of
mnist_lit, launched as the basic launcher launches them. The integration suite starts those apps as
processes of their own, so it also shows that Hydra's plugin scan finds the launcher without
mnist_lit imported. .ci/run runs this file again on a regular `pip install .`."""

from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from pytest import mark


@mark.parametrize("launcher_name, overrides", [("stacked", [])])
class TestStackedLauncher(LauncherTestSuite):
    pass


@mark.parametrize("task_launcher_cfg, extra_flags", [({}, ["-m", "hydra/launcher=stacked"])])
class TestStackedLauncherIntegration(IntegrationTestSuite):
    pass
