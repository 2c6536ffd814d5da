// SPDX-License-Identifier: GPL-2.0
// The lab's copy of Cilium's sockops acceleration (bpf/sockops/bpf_sockops.c and
// bpf_redir.c, simplified to IPv4): when a TCP connection in the cgroup is established,
// the sockops program inserts the socket into a sockhash under Cilium's sock_key
// (local address first; ports in network order in a u32), with BPF_NOEXIST. The sk_msg
// program, run when a socket in the map sends, builds the *peer's* key and redirects the
// payload straight into that socket's receive queue: the bytes never pass the IP stack.
// The map value is 8 bytes (Cilium's is 4) so user space can read socket cookies.
// SOCKOPS_NAME / SKMSG_NAME are passed with -D so the programs carry netlab's prefix.
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
	__type(value, __u64);
	__uint(max_entries, 65535);
} cilium_sock_ops SEC(".maps");

SEC("sockops")
int SOCKOPS_NAME(struct bpf_sock_ops *skops)
{
	struct sock_key key = {};

	if (skops->family != 2 /* AF_INET */)
		return 1;
	if (skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB &&
	    skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 1;
	key.sip4 = skops->local_ip4;
	key.dip4 = skops->remote_ip4;
	key.family = ENDPOINT_KEY_IPV4;
	key.sport = bpf_ntohl(skops->local_port) >> 16;
	key.dport = skops->remote_port >> 16;
	// An existing key (a stale entry) makes this fail with -EEXIST and the socket stays
	// out of the map: exactly the failure of case 000.
	bpf_sock_hash_update(skops, &cilium_sock_ops, &key, BPF_NOEXIST);
	return 1;
}

SEC("sk_msg")
int SKMSG_NAME(struct sk_msg_md *msg)
{
	struct sock_key key = {};

	if (msg->family != 2)
		return SK_PASS;
	// The peer's key: its local end is our remote end.
	key.sip4 = msg->remote_ip4;
	key.dip4 = msg->local_ip4;
	key.family = ENDPOINT_KEY_IPV4;
	key.sport = msg->remote_port >> 16;
	key.dport = bpf_ntohl(msg->local_port) >> 16;
	bpf_msg_redirect_hash(msg, &cilium_sock_ops, &key, BPF_F_INGRESS);
	return SK_PASS;
}
