"""The lab's scenarios, one module each."""

from netlab.lab.scenario import Scenario
from netlab.lab.scenarios import stale_cgroup_prog

ALL: list[Scenario] = [stale_cgroup_prog.SCENARIO]
