// SPDX-License-Identifier: GPL-2.0
// The lab's copy of Cilium's socket-level load balancer (cgroup/connect4, connect6):
// look up the service frontend (backend slot 0) for the destination, pick a backend
// slot, look up the slot's backend and rewrite the destination before any packet
// exists. Struct layouts follow Cilium v1.14-v1.17 (bpf/lib/common.h: lb4_key,
// lb4_service, lb4_backend with cluster_id; see the decoders' cilium.json), so
// netlab's decoders read this lab's maps exactly as they read a real node's.
// The object holds two of the family Cilium's bpf_sock.c attaches: the connect4
// program, which rewrites, and a post_bind4 program, which reads the service map alone
// (Cilium's checks a bind against service ports), so an investigation meets programs
// that use the service map without the backend map. Map sizes and flags are Cilium's
// defaults (65536 entries, not preallocated). IPv6 is the same family on connect6 and
// post_bind6 with the lb6 maps (lb6_key, lb6_backend of the same versions). The
// program names are passed with -D so the programs carry netlab's name prefix.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

struct lb4_key {
	__be32 address;
	__be16 dport;
	__u16 backend_slot;
	__u8 proto;
	__u8 scope;
	__u8 pad[2];
};

struct lb4_service {
	__u32 backend_id;
	__u16 count;
	__u16 rev_nat_index;
	__u8 flags;
	__u8 flags2;
	__u8 pad[2];
};

struct lb4_backend {
	__be32 address;
	__be16 port;
	__u8 proto;
	__u8 flags;
	__u8 cluster_id;
	__u8 pad[3];
};

// Map names are Cilium's; the kernel keeps 15 characters ("cilium_lb4_serv").
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_key);
	__type(value, struct lb4_service);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} cilium_lb4_services_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb4_backend);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} cilium_lb4_backends_v3 SEC(".maps");

SEC("cgroup/connect4")
int CONNECT_NAME(struct bpf_sock_addr *ctx)
{
	struct lb4_key key = {};
	struct lb4_service *svc, *slot;
	struct lb4_backend *backend;
	__u32 backend_id;

	key.address = ctx->user_ip4;
	key.dport = (__be16)ctx->user_port;
	svc = bpf_map_lookup_elem(&cilium_lb4_services_v2, &key);
	if (!svc || svc->count == 0)
		return 1; // not a service: leave the destination alone
	key.backend_slot = 1 + bpf_get_prandom_u32() % svc->count;
	slot = bpf_map_lookup_elem(&cilium_lb4_services_v2, &key);
	if (!slot)
		return 1;
	backend_id = slot->backend_id;
	backend = bpf_map_lookup_elem(&cilium_lb4_backends_v3, &backend_id);
	if (!backend)
		return 1;
	ctx->user_ip4 = backend->address;
	ctx->user_port = backend->port;
	return 1;
}

// A bind to a service's own address and port is refused; everything else proceeds.
SEC("cgroup/post_bind4")
int POST_BIND_NAME(struct bpf_sock *ctx)
{
	struct lb4_key key = {};
	struct lb4_service *svc;

	key.address = ctx->src_ip4;
	key.dport = bpf_htons((__u16)ctx->src_port);
	svc = bpf_map_lookup_elem(&cilium_lb4_services_v2, &key);
	return svc ? 0 : 1;
}

// --- IPv6: Cilium's lb6 maps and the connect6/post_bind6 programs -------------------

struct lb6_key {
	__u32 address[4]; // union v6addr, network order
	__be16 dport;
	__u16 backend_slot;
	__u8 proto;
	__u8 scope;
	__u8 pad[2];
};

struct lb6_backend {
	__u32 address[4];
	__be16 port;
	__u8 proto;
	__u8 flags;
	__u8 cluster_id;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb6_key);
	__type(value, struct lb4_service); // lb6_service has lb4_service's layout
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} cilium_lb6_services_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb6_backend);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} cilium_lb6_backends_v3 SEC(".maps");

SEC("cgroup/connect6")
int CONNECT6_NAME(struct bpf_sock_addr *ctx)
{
	struct lb6_key key = {};
	struct lb4_service *svc, *slot;
	struct lb6_backend *backend;
	__u32 backend_id;

	key.address[0] = ctx->user_ip6[0];
	key.address[1] = ctx->user_ip6[1];
	key.address[2] = ctx->user_ip6[2];
	key.address[3] = ctx->user_ip6[3];
	key.dport = (__be16)ctx->user_port;
	svc = bpf_map_lookup_elem(&cilium_lb6_services_v2, &key);
	if (!svc || svc->count == 0)
		return 1;
	key.backend_slot = 1 + bpf_get_prandom_u32() % svc->count;
	slot = bpf_map_lookup_elem(&cilium_lb6_services_v2, &key);
	if (!slot)
		return 1;
	backend_id = slot->backend_id;
	backend = bpf_map_lookup_elem(&cilium_lb6_backends_v3, &backend_id);
	if (!backend)
		return 1;
	ctx->user_ip6[0] = backend->address[0];
	ctx->user_ip6[1] = backend->address[1];
	ctx->user_ip6[2] = backend->address[2];
	ctx->user_ip6[3] = backend->address[3];
	ctx->user_port = backend->port;
	return 1;
}

SEC("cgroup/post_bind6")
int POST_BIND6_NAME(struct bpf_sock *ctx)
{
	struct lb6_key key = {};
	struct lb4_service *svc;

	key.address[0] = ctx->src_ip6[0];
	key.address[1] = ctx->src_ip6[1];
	key.address[2] = ctx->src_ip6[2];
	key.address[3] = ctx->src_ip6[3];
	key.dport = bpf_htons((__u16)ctx->src_port);
	svc = bpf_map_lookup_elem(&cilium_lb6_services_v2, &key);
	return svc ? 0 : 1;
}
