"""Route-cache entries on demand: ``python -m netlab.lab.pmtu_flood PREFIX COUNT SIZE``
sends don't-fragment UDP datagrams of SIZE bytes to COUNT addresses in PREFIX (an IPv6
/64 behind a smaller-MTU link). Each Packet Too Big answer makes the kernel cache a PMTU
exception route for that destination: a dst entry counted in /proc/net/rt6_stats.
Bounded: COUNT at most 100000, one datagram per address and a second after the answer."""

from __future__ import annotations

import ipaddress
import socket
import sys
import time

IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO = 23, 2


def flood(prefix: str, count: int, size: int) -> int:
    net = ipaddress.IPv6Network(prefix)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
    payload = b"x" * size
    sent = 0
    for round_ in range(2):
        for i in range(1, min(count, 100_000) + 1):
            try:
                sock.sendto(payload, (str(net[i]), 9))
                sent += 1
            except OSError:
                pass  # EMSGSIZE once the exception is cached: that is the point
        time.sleep(0.2 if round_ == 0 else 0)
    return sent


if __name__ == "__main__":
    print(flood(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
