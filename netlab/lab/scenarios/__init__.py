"""The lab's scenarios, one module each."""

from netlab.lab.scenario import Scenario

ALL: list[Scenario] = []
