"""The ``netlab`` command line.

Every user-fixable problem ends as one line on stderr (``netlab: ...``) and exit
status 2; Ctrl-C, SIGTERM and SIGHUP sweep probes and exit 128 + the signal number.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from netlab.errors import NetlabError


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_doctor(args: argparse.Namespace) -> int:
    from netlab import doctor

    report = doctor.check(args.target)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.text())
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    from netlab import lab

    if args.lab_command == "list":
        scenarios = lab.SCENARIOS().values()
        if args.json:
            _print_json([{"scenario": s.name, "investigation": s.investigation, "about": s.description,
                          "twins": [vars(t) for t in s.twins]} for s in scenarios])  # fmt: skip
        else:
            for s in scenarios:
                twins = ", ".join(t.name for t in s.twins)
                print(f"{s.name:<20} -> netlab run {s.investigation}\n    {s.description.strip()}\n"
                      f"    twins: {twins}\n")  # fmt: skip
        return 0
    if args.lab_command == "up":
        params = lab.up(args.name, healthy=args.healthy, twin=args.twin, target=args.target)
        if args.json:
            _print_json(params)
        else:
            twin = lab.scenario(args.name).twin(params["twin"]).label
            print(f"lab {args.name} is up ({twin}); parameters saved for `netlab run ... --lab {args.name}`:")
            _print_json(params)
        return 0
    if args.lab_command == "verify":
        result = lab.verify(args.name, target=args.target)
        if args.json:
            _print_json({"scenario": result.scenario, "twin": result.twin.name, "healthy": result.healthy, "ok": result.ok,
                         "checks": [vars(c) for c in result.checks]})  # fmt: skip
        else:
            print(result.text())
        return 0 if result.ok else 1
    if args.lab_command == "status":
        rows = lab.status(target=args.target)
        if args.json:
            _print_json(rows)
        else:
            for row in rows:
                print(f"{row['scenario']:<20} {row['state']}")
        return 0
    if args.lab_command == "down":
        if not args.name and not args.all:
            raise NetlabError("lab down: name a scenario or use --all")
        removed = lab.down(args.name, all=args.all, target=args.target)
        if args.json:
            _print_json({"removed": removed})
        else:
            print("removed: " + (", ".join(removed) if removed else "nothing was up"))
        return 0
    if args.lab_command == "reproduce":
        _print_json(lab.reproduction(args.name, target=args.target)())
        return 0
    if args.lab_command == "guest":
        return _cmd_guest(args)
    raise NetlabError("lab: choose list, up, verify, status, down, reproduce or guest")


def _cmd_guest(args: argparse.Namespace) -> int:
    from netlab.lab import guest

    if args.guest_command == "up":
        node = guest.up(timeout=args.timeout)
        if args.json:
            _print_json(node.to_dict())
        else:
            print(f"guest {guest.NAME} is up: kernel {node.kernel}, ssh-ready in {node.boot_seconds:g} s")
            print(f"  target:     {node.url}\n  ssh config: {node.ssh_config}")
            print(f"  e.g. NETLAB_SSH_CONFIG={node.ssh_config} netlab doctor --target {node.url}")
        return 0
    if args.guest_command == "status":
        row = guest.status()
        if args.json:
            _print_json(row)
        else:
            print(
                f"{row['guest']}: {row['state']}"
                + (f"  {row['url']}  (ssh config {row['ssh_config']})" if "url" in row else "")
            )
        return 0
    removed = guest.down()
    if args.json:
        _print_json({"removed": removed})
    else:
        print("removed: " + (", ".join(removed) if removed else "no guest was up"))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from netlab.report import run as runner

    parameters = runner.parse_parameters(args.p)
    if args.targets:
        from netlab.report import batch

        index = batch.run_many(args.investigation, args.targets, lab=args.lab, parameters=parameters,
                               out=args.out, timeout=args.timeout, jobs=args.jobs)  # fmt: skip
        if args.json:
            _print_json(index.rows)
        else:
            print(index.text())
        return 0
    result = runner.run(args.investigation, target=args.target, lab=args.lab, parameters=parameters,
                        out=args.out, timeout=args.timeout, keep_code=args.keep_code)  # fmt: skip
    if args.json:
        _print_json(result.findings.to_dict())
    else:
        f = result.findings
        print(f"{f.investigation} on {f.target}: {f.verdict}\n{f.summary}")
        print(f"notebook: {result.notebook}")
        if result.html:
            print(f"report:   {result.html}")
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    from netlab import cleanup
    from netlab.targets import open_target

    target = open_target(args.target)
    removed = cleanup.sweep_everything(target) if args.all else cleanup.sweep_orphans(target)
    if args.json:
        _print_json({"removed": removed})
    else:
        print("removed: " + (", ".join(removed) if removed else "nothing"))
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from netlab.decoders import detect

    return detect.main(args.file, kind=args.kind, layout=args.layout, as_json=args.json)


def cmd_writeup(args: argparse.Namespace) -> int:
    from netlab.report import writeup

    paths = writeup.write(args.notebook, out=args.out)
    if args.json:
        _print_json({k: str(v) for k, v in paths.items()})
    else:
        for kind, path in paths.items():
            print(f"{kind}: {path}")
    return 0


def cmd_notebooks(args: argparse.Namespace) -> int:
    from netlab.report import run

    copies = run.copy_notebooks(args.dir, force=args.force)
    print(f"copied {len(copies)} notebooks into {args.dir}; open them with: jupyter lab {args.dir}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from netlab.report import demo

    return demo.main(out=args.out)


class _RunHelp(argparse.Action):
    """``netlab run NAME --help``: the usual help plus NAME's declared parameters."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:  # fmt: skip
        from netlab.investigations import REGISTRY

        text = parser.format_help()
        cls = REGISTRY.get(getattr(namespace, "investigation", None) or "")
        if cls is None:
            text += (
                "\ninvestigations: "
                + ", ".join(REGISTRY)
                + " (`netlab run NAME --help` for its parameters)\n"
            )
        else:
            text += f"\n{cls.name}: {cls.title}\nparameters (-p NAME VALUE; --lab {cls.scenario} fills them from the lab):\n"
            text += "".join(f"  {p.describe()}\n" for p in cls.params)
        print(text, end="")
        parser.exit(0)


def cmd_list(args: argparse.Namespace) -> int:
    from netlab import lab
    from netlab.investigations import REGISTRY

    rows = [{"kind": "investigation", "name": c.name, "about": c.title} for c in REGISTRY.values()]
    rows += [{"kind": "lab scenario", "name": s.name, "about": s.description.strip().splitlines()[0]}
             for s in lab.SCENARIOS().values()]  # fmt: skip
    if args.json:
        _print_json(rows)
    else:
        for row in rows:
            print(f"{row['kind']:<14} {row['name']:<18} {row['about']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netlab",
        description="Guided investigations of node networking incidents.",
        epilog="exit status: 0 done (whatever the verdict); 2 a problem to fix, said in one line "
        "(bad parameter, missing capability, unreachable node, a step past its timeout); "
        "130 Ctrl-C, 143 SIGTERM, 129 SIGHUP (probes removed first)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("doctor", help="what this node can do, probed")
    p.add_argument("--target", default="local", help="local, netns://NAME or ssh://[user@]host[:port]")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("lab", help="reproduce the incidents in network namespaces")
    lab_sub = p.add_subparsers(dest="lab_command", required=True)
    q = lab_sub.add_parser("list", help="the scenarios")
    q.add_argument("--json", action="store_true")
    on_node = "build it on this node (ssh://...): netlab ships its own code there for the lab"
    q = lab_sub.add_parser("status", help="what is up")
    q.add_argument("--json", action="store_true")
    q.add_argument("--target", default=None, help=on_node)
    q = lab_sub.add_parser("up", help="bring a scenario up (idempotent)")
    q.add_argument("name")
    twin = q.add_mutually_exclusive_group()
    twin.add_argument("--healthy", action="store_true", help="the same topology without the fault")
    twin.add_argument("--twin", default="", metavar="TWIN",
                      help="another way to bring it up that the scenario declares (`netlab lab list` names "
                      "them), e.g. --twin rollout for stale-cgroup-prog; --healthy is --twin healthy")  # fmt: skip
    q.add_argument("--json", action="store_true")
    q.add_argument("--target", default=None, help=on_node)
    q = lab_sub.add_parser("verify", help="demonstrate the symptom (or that a healthy twin works)")
    q.add_argument("name")
    q.add_argument("--json", action="store_true")
    q.add_argument("--target", default=None, help=on_node)
    q = lab_sub.add_parser("reproduce", help="make the incident's traffic once; print what it saw (JSON)")
    q.add_argument("name")
    q.add_argument("--target", default=None, help=on_node)
    q = lab_sub.add_parser("down", help="remove a scenario, or everything netlab made")
    q.add_argument("name", nargs="?")
    q.add_argument("--all", action="store_true", help="also any leftovers and the guest node")
    q.add_argument("--json", action="store_true")
    q.add_argument("--target", default=None, help=on_node)
    q = lab_sub.add_parser("guest", help="a second node: Debian's 6.1 kernel in a VM, reached over ssh")
    guest_sub = q.add_subparsers(dest="guest_command", required=True)
    g = guest_sub.add_parser("up", help="boot it (idempotent); prints its target URL and ssh config")
    g.add_argument("--timeout", type=float, default=180, help="seconds to wait for ssh, default 180")
    g.add_argument("--json", action="store_true")
    for name, helptext in (("status", "up, down, or what is wrong"), ("down", "stop it, remove its files")):
        g = guest_sub.add_parser(name, help=helptext)
        g.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lab)

    p = sub.add_parser("run", help="run an investigation notebook headlessly", add_help=False)
    p.add_argument(
        "-h", "--help", action=_RunHelp, nargs=0, help="this help, and the investigation's parameters"
    )
    p.add_argument("investigation")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--target", default="local")
    where.add_argument("--targets", help="file with one target URL per line (batch)")
    p.add_argument("--lab", default="", help="take parameters from this lab scenario")
    p.add_argument("-p", nargs=2, action="append", metavar=("KEY", "VALUE"), help="notebook parameter")
    p.add_argument("--out", default="reports")
    p.add_argument("--timeout", type=float, default=900, help="per-cell timeout, seconds")
    p.add_argument("--jobs", type=int, default=4, help="batch: targets run at once")
    p.add_argument("--keep-code", action="store_true", help="show code cells in the HTML report")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("list", help="the investigations and lab scenarios, one line each")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("cleanup", help="remove probes left by killed netlab processes")
    p.add_argument("--all", action="store_true", help="also live probes and every lab scenario")
    p.add_argument("--target", default="local", help="the node to clean (local or ssh://...), default local")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cleanup)

    p = sub.add_parser(
        "decode", help="decode pasted output (bpftool, iptables-save, conntrack, ss, stacks...)"
    )
    p.add_argument("file", nargs="?", default="-", help="the paste; - or nothing for stdin")
    p.add_argument(
        "--kind", help="skip detection: bpftool-map-dump, iptables-save, conntrack, ss, kernel-stacks..."
    )
    p.add_argument(
        "--layout", help="a map dump's layout when the paste does not name the map, e.g. lb4_services/D"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("writeup", help="turn an executed investigation into a write-up")
    p.add_argument("notebook")
    p.add_argument("--out", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_writeup)

    p = sub.add_parser("notebooks", help="copy the investigation notebooks into DIR for JupyterLab")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--force", action="store_true", help="overwrite notebooks already in DIR")
    p.set_defaults(func=cmd_notebooks)

    p = sub.add_parser("demo", help="every lab scenario, investigated, with reports")
    p.add_argument("--out", default="reports/demo")
    p.set_defaults(func=cmd_demo)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled like Ctrl-C: every ``finally`` that removes a probe
    runs, then the sweep."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


def main(argv: Sequence[str] | None = None) -> int:
    # At exit the interpreter's last garbage collection walks every object left (0.15 s
    # with the notebook libraries loaded) just before the system frees them all.
    atexit.unregister(gc.freeze)  # once per process, however often main() is called
    atexit.register(gc.freeze)
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, _terminate) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return int(args.func(args) or 0)
    except NetlabError as exc:
        print(f"netlab: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        from netlab import cleanup

        # The notebook client's event loop was cut mid-cell: at exit asyncio would log its
        # abandoned tasks ("Task was destroyed but it is pending!") after our one line.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        cleanup.sweep_orphans()
        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        what = "interrupted" if signum == signal.SIGINT else f"terminated ({signal.Signals(signum).name})"
        print(f"netlab: {what}; probes removed", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:
        # The reader went away (``netlab ... | head``): not an error worth a traceback.
        # Point stdout at /dev/null so the interpreter's final flush does not fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
