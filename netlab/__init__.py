"""netlab: guided investigations of Linux and Kubernetes node networking incidents.

The package holds all logic; the notebooks in ``notebooks/`` call one helper per cell.
Sub-packages follow the kit's layers: ``targets`` (where commands run), ``collectors``
(what is read from a node), ``decoders`` (bytes to rows, layouts as data), ``probes``
(what is attached to the kernel, always bounded and detached), ``investigations`` (one
module per case, each returning :class:`~netlab.findings.Findings`), ``lab`` (the
incidents reproduced in network namespaces) and ``report`` (notebooks, HTML, write-ups).
"""

from netlab.errors import NetlabError

__version__ = "0.1.0"

__all__ = ["NetlabError", "__version__"]
