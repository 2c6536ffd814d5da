// SPDX-License-Identifier: GPL-2.0
// Drops of one flow, counted in the kernel.
//
// Attached to the skb free that means "dropped": the kfree_skb tracepoint (tp_btf), or
// a kprobe on the function behind it where tracepoints are not wanted. Each dropped
// packet is parsed from the skb (IPv4/IPv6 header, TCP/UDP ports) and compared with the
// flow in the `flow` map, both directions; only the flow's drops are counted, by (reason,
// location, netns, device, 5-tuple), each with its kernel stack, taken when the key is
// first seen and then once per distinct (location, reason): a drop of the flow costs one
// hash lookup and an add, a drop of other traffic the parse and a compare. Bounded by
// the map sizes and a cap on counted drops (per CPU); what did not fit is counted too.
//
// Variants, chosen with -D when the node's kernel is known:
//   ATTACH_KPROBE=0  tp_btf/kfree_skb; HAS_REASON=1 on kernels with the reason argument
//                    (5.17+), 0 before.
//   ATTACH_KPROBE=1  kprobe on KPROBE_FN; KPROBE_ARGS says its signature:
//                    1 kfree_skb(skb), 2 kfree_skb_reason(skb, reason),
//                    3 sk_skb_reason_drop(sk, skb, reason) (6.11+).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#ifndef MAX_SITES
#define MAX_SITES 4096
#endif
#ifndef MAX_STACKS
#define MAX_STACKS 1024
#endif

struct flow_filter {
	__u8 a[16];        // flow end A (the client); IPv4 in the first 4 bytes
	__u8 b[16];        // flow end B (the server)
	__u16 a_port;      // host order; 0: any
	__u16 b_port;
	__u8 family;       // 2 (AF_INET) or 10 (AF_INET6); 0: any
	__u8 protocol;     // IPPROTO_*; 0: any
	__u8 has_a;        // 0: end A is any address
	__u8 has_b;
	__u32 netns;       // network namespace inode; 0: any
	__u32 min_reason;  // reasons below this are not drops (NOT_DROPPED_YET, CONSUMED)
	__u32 cap;         // drops counted at most
};

struct drop_key {
	__u64 location;
	__u32 reason;
	__u32 pad0;
	__u32 netns;
	__u32 ifindex;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 protocol;
	__u8 pad[2];
};

struct drop_count {
	__u64 count;
	__s64 stack_id;
};

struct site {
	__u64 location;
	__u32 reason;
	__u32 pad;
};

// Totals, per CPU (no shared cache line on the hot path): 0 drops of the flow counted,
// 1 not counted (a map was full), 2 over the cap.
enum { SEEN, LOST, OVER_CAP, NTOTALS };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_filter);
} flow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SITES);
	__type(key, struct drop_key);
	__type(value, struct drop_count);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_STACKS);
	__type(key, struct site);
	__type(value, __s64);
} sites SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, MAX_STACKS);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 32 * sizeof(__u64));
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NTOTALS);
	__type(key, __u32);
	__type(value, __u64);
} totals SEC(".maps");

static __always_inline void bump(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&totals, &which);

	if (v)
		*v += 1;
}

static __always_inline int same(const __u8 *x, const __u8 *y, int n)
{
	int i;

#pragma unroll
	for (i = 0; i < 16; i++)
		if (i < n && x[i] != y[i])
			return 0;
	return 1;
}

static __always_inline int address_ok(const struct flow_filter *c, int is_a, const __u8 *addr, int n)
{
	return !(is_a ? c->has_a : c->has_b) || same(addr, is_a ? c->a : c->b, n);
}

static __always_inline int port_ok(const struct flow_filter *c, int is_a, __u16 port)
{
	__u16 want = is_a ? c->a_port : c->b_port;

	return !want || want == port;
}

#if ATTACH_KPROBE
#define FIELD(p, f) BPF_CORE_READ(p, f)
#else
// tp_btf hands typed pointers: a field is a plain (CO-RE relocated) load, not a helper
// call, which is most of what a drop of other traffic costs.
#define FIELD(p, f) ((p)->f)
#endif

static __always_inline int count_drop(void *ctx, struct sk_buff *skb, __u64 location, __u32 reason)
{
	__u32 zero = 0;
	struct flow_filter *c = bpf_map_lookup_elem(&flow, &zero);
	struct drop_key key = {};
	union {
		struct iphdr v4;
		struct ipv6hdr v6;
		__u8 first;
	} h;
	unsigned char *head;
	__u16 nh, l4 = 0;
	int n, forward, backward;

	if (!c || !skb || reason < c->min_reason)
		return 0;
	head = FIELD(skb, head);
	nh = FIELD(skb, network_header);
	// A packet whose network header was never set (~0) is not an IP packet of a flow.
	if (!head || nh == (__u16)~0U)
		return 0;
	// One read covers either header (an IPv4 packet shorter than 40 bytes reads into the
	// rest of its buffer, which is never used).
	if (bpf_probe_read_kernel(&h, sizeof(h.v6), head + nh))
		return 0;
	if ((h.first >> 4) == 4) {
		key.family = 2;
		key.protocol = h.v4.protocol;
		__builtin_memcpy(key.saddr, &h.v4.saddr, 4);
		__builtin_memcpy(key.daddr, &h.v4.daddr, 4);
		// Later fragments carry no ports.
		if (!(h.v4.frag_off & bpf_htons(0x1fff)))
			l4 = nh + (h.v4.ihl & 0xf) * 4;
		n = 4;
	} else if ((h.first >> 4) == 6) {
		key.family = 10;
		key.protocol = h.v6.nexthdr;
		__builtin_memcpy(key.saddr, &h.v6.saddr, 16);
		__builtin_memcpy(key.daddr, &h.v6.daddr, 16);
		l4 = nh + sizeof(h.v6);
		n = 16;
	} else {
		return 0;
	}
	if ((c->family && c->family != key.family) || (c->protocol && c->protocol != key.protocol))
		return 0;
	// Addresses first: most other traffic stops here, before its ports are read.
	forward = address_ok(c, 1, key.saddr, n) && address_ok(c, 0, key.daddr, n);
	backward = address_ok(c, 0, key.saddr, n) && address_ok(c, 1, key.daddr, n);
	if (!forward && !backward)
		return 0;
	if (l4 && (key.protocol == IPPROTO_TCP || key.protocol == IPPROTO_UDP)) {
		__be16 ports[2];

		if (!bpf_probe_read_kernel(ports, sizeof(ports), head + l4)) {
			key.sport = bpf_ntohs(ports[0]);
			key.dport = bpf_ntohs(ports[1]);
		}
	}
	if (!((forward && port_ok(c, 1, key.sport) && port_ok(c, 0, key.dport)) ||
	      (backward && port_ok(c, 0, key.sport) && port_ok(c, 1, key.dport))))
		return 0;
	{
		struct net_device *dev = FIELD(skb, dev);
		struct sock *sk = FIELD(skb, sk);

		struct net *net = 0;

		if (dev) {
			key.ifindex = FIELD(dev, ifindex);
			net = FIELD(dev, nd_net.net);
		} else if (sk) {
			net = FIELD(sk, __sk_common.skc_net.net);
		}
		if (net)
			key.netns = FIELD(net, ns.inum);
	}
	if (c->netns && c->netns != key.netns)
		return 0;

	{
		__u32 which = SEEN;
		__u64 *seen = bpf_map_lookup_elem(&totals, &which);

		if (!seen)
			return 0;
		if (*seen >= c->cap) {
			bump(OVER_CAP);
			return 0;
		}
		*seen += 1;
	}
	key.location = location;
	key.reason = reason;
	{
		struct drop_count *count = bpf_map_lookup_elem(&counts, &key);
		struct drop_count first = { .count = 1 };
		struct site s = { .location = location, .reason = reason };
		__s64 *known;

		if (count) {
			__sync_fetch_and_add(&count->count, 1);
			return 0;
		}
		known = bpf_map_lookup_elem(&sites, &s);
		if (known) {
			first.stack_id = *known;
		} else {
			first.stack_id = bpf_get_stackid(ctx, &stacks, 0);
			bpf_map_update_elem(&sites, &s, &first.stack_id, BPF_NOEXIST);
		}
		if (bpf_map_update_elem(&counts, &key, &first, BPF_NOEXIST)) {
			count = bpf_map_lookup_elem(&counts, &key);  // another CPU added it
			if (count)
				__sync_fetch_and_add(&count->count, 1);
			else
				bump(LOST);
		}
	}
	return 0;
}

#if ATTACH_KPROBE
// At a function's entry the stack pointer holds the return address: the caller, which
// is what the tracepoint reports as the location.
static __always_inline __u64 caller(struct pt_regs *regs)
{
	__u64 ret = 0;

	bpf_probe_read_kernel(&ret, sizeof(ret), (void *)PT_REGS_SP(regs));
	return ret;
}

SEC("kprobe/" KPROBE_FN)
int PROBE_NAME(struct pt_regs *regs)
{
#if KPROBE_ARGS == 3
	return count_drop(regs, (struct sk_buff *)PT_REGS_PARM2(regs), caller(regs), (__u32)PT_REGS_PARM3(regs));
#elif KPROBE_ARGS == 2
	return count_drop(regs, (struct sk_buff *)PT_REGS_PARM1(regs), caller(regs), (__u32)PT_REGS_PARM2(regs));
#else
	return count_drop(regs, (struct sk_buff *)PT_REGS_PARM1(regs), caller(regs), 0);
#endif
}
#elif HAS_REASON
SEC("tp_btf/kfree_skb")
int BPF_PROG(PROBE_NAME, struct sk_buff *skb, void *location, int reason)
{
	return count_drop(ctx, skb, (__u64)location, (__u32)reason);
}
#else
SEC("tp_btf/kfree_skb")
int BPF_PROG(PROBE_NAME, struct sk_buff *skb, void *location)
{
	return count_drop(ctx, skb, (__u64)location, 0);
}
#endif
