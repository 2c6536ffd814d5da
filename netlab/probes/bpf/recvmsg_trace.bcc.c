// netlab: which receive path each process takes, and sockmap inserts the kernel refused.
//
// BCC program (compiled on the node against its own kernel headers; kprobes). Counted in
// the kernel, read once at the end: calls of tcp_recvmsg / tcp_bpf_recvmsg per (process,
// function, socket tuple, network namespace, kernel stack), and every failed
// sock_hash_update_common / sock_map_update_common with the socket it tried to insert
// and the error. Only sockets with PORT at either end are counted (the pod's port: the
// node's own ssh and other traffic stay out). Bounded by MAX_KEYS distinct rows per map
// and MAX_EVENTS recorded calls. PFX_ is replaced by netlab's prefix, so the programs
// and maps are recognisably netlab's while they exist.
#include <uapi/linux/ptrace.h>
#include <net/sock.h>
#include <linux/bpf.h>

enum fn { FN_TCP_RECVMSG = 0, FN_TCP_BPF_RECVMSG = 1, FN_TCP_BPF_RECVMSG_PARSER = 2,
	  FN_SOCK_HASH_UPDATE = 3, FN_SOCK_MAP_UPDATE = 4 };

struct tuple {
	u32 netns;
	u16 family;
	u16 lport;
	u16 rport;
	u16 pad;
	u32 laddr[4];
	u32 raddr[4];
};

struct call_key {
	u32 tgid;
	u32 fn;
	s32 stack_id;
	s32 err;
	u32 map_id;
	struct tuple t;
};

struct comm_t {
	char comm[16];
};

struct pending {
	struct tuple t;
	u32 fn;
	s32 stack_id;
	u32 map_id;
};

BPF_HASH(PFX_calls, struct call_key, u64, MAX_KEYS);
BPF_HASH(PFX_refused, struct call_key, u64, MAX_KEYS);
BPF_HASH(PFX_comms, u32, struct comm_t, MAX_KEYS);
BPF_HASH(PFX_pending, u64, struct pending, 4096);
BPF_STACK_TRACE(PFX_stacks, MAX_STACKS);
BPF_ARRAY(PFX_events, u64, 1);

static __always_inline int read_tuple(struct sock *sk, struct tuple *t)
{
	struct sock_common c = {};
	struct net *net = NULL;

	bpf_probe_read_kernel(&c, sizeof(c), &sk->__sk_common);
	t->family = c.skc_family;
	t->lport = c.skc_num;
	t->rport = ntohs(c.skc_dport);
	if (t->lport != PORT && t->rport != PORT)
		return 0;
	if (c.skc_family == AF_INET) {
		t->laddr[0] = c.skc_rcv_saddr;
		t->raddr[0] = c.skc_daddr;
	} else if (c.skc_family == AF_INET6) {
		__builtin_memcpy(t->laddr, &c.skc_v6_rcv_saddr, 16);
		__builtin_memcpy(t->raddr, &c.skc_v6_daddr, 16);
	} else {
		return 0;
	}
	net = c.skc_net.net;
	bpf_probe_read_kernel(&t->netns, sizeof(t->netns), &net->ns.inum);
	return 1;
}

static __always_inline int under_cap(void)
{
	int zero = 0;
	u64 *seen = PFX_events.lookup(&zero);

	if (!seen || *seen >= MAX_EVENTS)
		return 0;
	__sync_fetch_and_add(seen, 1);
	return 1;
}

// BCC resolves a map only in its method syntax (PFX_calls.lookup): no map pointers.
static __always_inline void record(int refused, struct tuple *t, u32 fn, s32 err, s32 stack_id,
				   u32 map_id)
{
	struct call_key key = {};
	struct comm_t comm = {};
	u64 one = 1, *n;

	if (!under_cap())
		return;
	key.t = *t;
	key.tgid = bpf_get_current_pid_tgid() >> 32;
	key.fn = fn;
	key.err = err;
	key.stack_id = stack_id;
	key.map_id = map_id;
	bpf_get_current_comm(&comm.comm, sizeof(comm.comm));
	PFX_comms.update(&key.tgid, &comm);
	n = refused ? PFX_refused.lookup(&key) : PFX_calls.lookup(&key);
	if (n)
		__sync_fetch_and_add(n, 1);
	else if (refused)
		PFX_refused.update(&key, &one);
	else
		PFX_calls.update(&key, &one);
}

static __always_inline void call(struct pt_regs *ctx, u32 fn)
{
	struct tuple t = {};

	// The stack only for sockets that pass the port filter: the stack map stays small.
	if (read_tuple((struct sock *)PT_REGS_PARM1(ctx), &t))
		record(0, &t, fn, 0, PFX_stacks.get_stackid(ctx, 0), 0);
}

int PFX_rcv(struct pt_regs *ctx)
{
	call(ctx, FN_TCP_RECVMSG);
	return 0;
}

int PFX_bpf_rcv(struct pt_regs *ctx)
{
	call(ctx, FN_TCP_BPF_RECVMSG);
	return 0;
}

int PFX_bpf_rcvp(struct pt_regs *ctx)
{
	call(ctx, FN_TCP_BPF_RECVMSG_PARSER);
	return 0;
}

// Both update functions take the socket third: (map, key, sk, flags) and (map, idx, sk,
// flags). The entry remembers the socket and the caller's stack; the return sees the error.
static __always_inline void remember(struct pt_regs *ctx, u32 fn)
{
	struct pending p = {};
	struct bpf_map *map = (struct bpf_map *)PT_REGS_PARM1(ctx);
	u64 id = bpf_get_current_pid_tgid();

	if (!read_tuple((struct sock *)PT_REGS_PARM3(ctx), &p.t))
		return;
	p.fn = fn;
	p.stack_id = PFX_stacks.get_stackid(ctx, 0);
	bpf_probe_read_kernel(&p.map_id, sizeof(p.map_id), &map->id);
	PFX_pending.update(&id, &p);
}

int PFX_hupd(struct pt_regs *ctx)
{
	remember(ctx, FN_SOCK_HASH_UPDATE);
	return 0;
}

int PFX_mupd(struct pt_regs *ctx)
{
	remember(ctx, FN_SOCK_MAP_UPDATE);
	return 0;
}

int PFX_upd_ret(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	struct pending *p = PFX_pending.lookup(&id);
	s32 ret = (s32)PT_REGS_RC(ctx);

	if (!p)
		return 0;
	if (ret != 0)
		record(1, &p->t, p->fn, ret, p->stack_id, p->map_id);
	PFX_pending.delete(&id);
	return 0;
}
