// SPDX-License-Identifier: GPL-2.0
// The lab's own version of Cilium's v1.11 sockops acceleration (bpf/sockops/
// bpf_sockops.c and bpf_redir.c, IPv4 only, no policy or service lookups), with
// Cilium's shapes: the sockhash cilium_sock_ops with the 44-byte sock_key and a 4-byte
// value, a sockops program named bpf_sockmap and an sk_msg program named
// bpf_redir_proxy.
//
// When a TCP connection in the cgroup is established, bpf_sockmap inserts the socket
// with BPF_NOEXIST under the key *its peer* will send with: sip/sport are the socket's
// remote end, dip/dport its own (Cilium swaps the tuple before the update). When a
// socket in the map sends, bpf_redir_proxy builds the key from its own tuple and
// redirects the payload into the receive queue of the socket held under that key: the
// bytes never pass the IP stack. Ports sit in network order in the first two bytes of
// a u32.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

#define ENDPOINT_KEY_IPV4 1

struct sock_key {
	__u32 sip4;
	__u32 pad1, pad2, pad3;
	__u32 dip4;
	__u32 pad4, pad5, pad6;
	__u8 family;
	__u8 pad7;
	__u16 pad8;
	__u32 sport;
	__u32 dport;
} __attribute__((packed));

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__type(key, struct sock_key);
	__type(value, __u32);
	__uint(max_entries, 65535);
} cilium_sock_ops SEC(".maps");

SEC("sockops")
int bpf_sockmap(struct bpf_sock_ops *skops)
{
	struct sock_key key = {};

	// IPv4 sockets, and IPv6 ones with an IPv4 peer (a dual-stack listener's v4-mapped
	// connections): both are keyed as IPv4, as Cilium does; pure IPv6 is not accelerated.
	if (skops->family != 2 /* AF_INET */ && !(skops->family == 10 /* AF_INET6 */ && skops->remote_ip4))
		return 0;
	if (skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB &&
	    skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 0;
	key.sip4 = skops->remote_ip4;
	key.dip4 = skops->local_ip4;
	key.family = ENDPOINT_KEY_IPV4;
	key.sport = skops->remote_port >> 16;
	key.dport = bpf_ntohl(skops->local_port) >> 16;
	// An existing key (a stale entry) makes this fail with -EEXIST and the socket stays
	// out of the map with its plain handlers: exactly the failure of case 000.
	bpf_sock_hash_update(skops, &cilium_sock_ops, &key, BPF_NOEXIST);
	return 0;
}

SEC("sk_msg")
int bpf_redir_proxy(struct sk_msg_md *msg)
{
	struct sock_key key = {};

	// No family check, as in Cilium: a v4-mapped socket's IPv4 fields are its addresses,
	// a pure IPv6 socket's are zero and its key is found nowhere.
	key.sip4 = msg->local_ip4;
	key.dip4 = msg->remote_ip4;
	key.family = ENDPOINT_KEY_IPV4;
	key.sport = bpf_ntohl(msg->local_port) >> 16;
	key.dport = msg->remote_port >> 16;
	bpf_msg_redirect_hash(msg, &cilium_sock_ops, &key, BPF_F_INGRESS);
	return SK_PASS;
}
