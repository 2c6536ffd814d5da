// netlab: IPv6 packets dropped because their route lookup found no usable route.
//
// BCC program (compiled on the node against its own kernel headers; kprobes), case 002's
// own method. When an IPv6 dst cannot be allocated (the route cache past max_size on
// kernels that check it) the lookup falls back to ip6_null_entry, whose input and output
// handlers (ip6_pkt_discard, ip6_pkt_discard_out) end in ip6_pkt_drop(skb, code, mib):
// an ICMPv6 "no route" and a drop. Counted in the kernel per (kernel stack, network
// namespace, device, direction, ICMPv6 code, addresses), read once at the end; bounded by
// MAX_KEYS distinct rows and MAX_EVENTS recorded drops. Where ip6_pkt_drop is inlined the
// two discard handlers are probed instead. PFX_ is replaced by netlab's prefix.
#include <uapi/linux/ptrace.h>
#include <linux/skbuff.h>
#include <linux/ipv6.h>
#include <linux/netdevice.h>
#include <linux/snmp.h>
#include <uapi/linux/icmpv6.h>
#include <net/net_namespace.h>

enum direction { DIR_OTHER = 0, DIR_IN = 1, DIR_OUT = 2 };

struct drop_key {
	s32 stack_id;
	u32 netns;
	u32 direction;
	u32 code;
	u32 saddr[4];
	u32 daddr[4];
	char dev[16];
};

BPF_HASH(PFX_drops, struct drop_key, u64, MAX_KEYS);
BPF_STACK_TRACE(PFX_stacks, MAX_STACKS);
BPF_ARRAY(PFX_events, u64, 1);

static __always_inline void record(struct pt_regs *ctx, struct sk_buff *skb, u32 code, int mib)
{
	struct drop_key key = {};
	struct net_device *dev = NULL;
	struct ipv6hdr *ip6;
	unsigned char *head = NULL;
	u16 network = 0;
	int zero = 0;
	u64 one = 1, *n, *seen = PFX_events.lookup(&zero);

	if (!seen || *seen >= MAX_EVENTS)
		return;
	__sync_fetch_and_add(seen, 1);
	key.code = code;
	key.direction = mib == IPSTATS_MIB_INNOROUTES ? DIR_IN : mib == IPSTATS_MIB_OUTNOROUTES ? DIR_OUT : DIR_OTHER;
	// ip6_pkt_discard_out sets skb->dev to the route's device before ip6_pkt_drop (when it
	// is probed itself, the device is the one the packet had before).
	bpf_probe_read_kernel(&dev, sizeof(dev), &skb->dev);
	if (dev) {
		struct net *net = NULL;

		bpf_probe_read_kernel_str(key.dev, sizeof(key.dev), dev->name);
		bpf_probe_read_kernel(&net, sizeof(net), &dev->nd_net.net);
		if (net)
			bpf_probe_read_kernel(&key.netns, sizeof(key.netns), &net->ns.inum);
	}
	bpf_probe_read_kernel(&head, sizeof(head), &skb->head);
	bpf_probe_read_kernel(&network, sizeof(network), &skb->network_header);
	ip6 = (struct ipv6hdr *)(head + network);
	bpf_probe_read_kernel(key.saddr, sizeof(key.saddr), &ip6->saddr);
	bpf_probe_read_kernel(key.daddr, sizeof(key.daddr), &ip6->daddr);
	key.stack_id = PFX_stacks.get_stackid(ctx, 0);
	n = PFX_drops.lookup(&key);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		PFX_drops.update(&key, &one);
}

// static int ip6_pkt_drop(struct sk_buff *skb, u8 code, int ipstats_mib_noroutes)
int PFX_drop(struct pt_regs *ctx)
{
	record(ctx, (struct sk_buff *)PT_REGS_PARM1(ctx), (u8)PT_REGS_PARM2(ctx), (int)PT_REGS_PARM3(ctx));
	return 0;
}

// static int ip6_pkt_discard(struct sk_buff *skb)
int PFX_discard(struct pt_regs *ctx)
{
	record(ctx, (struct sk_buff *)PT_REGS_PARM1(ctx), ICMPV6_NOROUTE, IPSTATS_MIB_INNOROUTES);
	return 0;
}

// static int ip6_pkt_discard_out(struct net *net, struct sock *sk, struct sk_buff *skb)
int PFX_discard_out(struct pt_regs *ctx)
{
	record(ctx, (struct sk_buff *)PT_REGS_PARM3(ctx), ICMPV6_NOROUTE, IPSTATS_MIB_OUTNOROUTES);
	return 0;
}
