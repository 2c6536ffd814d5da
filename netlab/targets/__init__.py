"""Targets: where commands run.

One small interface (:class:`Target`: run an argument vector with a timeout, read and
write a file) with three kinds behind it:

- ``local``: this machine;
- ``netns://NAME``: this machine, inside network namespace NAME (a lab "node" or "pod",
  or a real pod's namespace) for everything namespaced: sockets, routes, netfilter,
  conntrack, ``/proc/net``;
- ``ssh://[user@]host[:port]``: a remote node through OpenSSH with host-key checking on;
  ``.../netns/NAME`` is a namespace there (and ``netns://NAME`` given to a run on that
  node means the same).

Investigation code never calls :mod:`subprocess` itself; it calls a target.
"""

from netlab.targets.base import CommandResult, Target
from netlab.targets.local import LocalTarget, NetnsTarget
from netlab.targets.open import open_target
from netlab.targets.ssh import SshTarget

__all__ = ["CommandResult", "LocalTarget", "NetnsTarget", "SshTarget", "Target", "open_target"]
