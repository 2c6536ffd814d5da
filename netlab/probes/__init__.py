"""What netlab attaches to the kernel: tracefs instances, BPF iterators, BCC traces.

Every probe has a duration and an event cap, is named with netlab's prefix and the
owning pid (:mod:`netlab.naming`), and is removed on success, error, timeout and
Ctrl-C; :func:`netlab.cleanup.sweep` removes those of processes that died.
"""
