// SPDX-License-Identifier: GPL-2.0
// One line per TCP socket of the reading task's network namespace, with the receive
// handler its protocol ops point at: tcp_recvmsg for a plain socket, tcp_bpf_recvmsg
// when a sockmap/sockhash holds it (its psock swapped sk_prot). CO-RE reads keep the
// offsets right for whatever kernel runs this (5.10+: the TCP iterator; no %pS). Request and TIME_WAIT minisockets have
// no sk_prot worth reading and are skipped.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

SEC("iter/tcp")
int PROBE_NAME(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct seq_file *seq = ctx->meta->seq;
	struct tcp_sock *tp;
	struct sock *sk;
	void *recvmsg;
	__u64 cookie;
	__u16 family;

	if (!skc)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	sk = (struct sock *)tp;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	recvmsg = BPF_CORE_READ(sk, __sk_common.skc_prot, recvmsg);
	cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	if (family == 2) {
		__u32 src = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__u32 dst = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__u16 sport = BPF_CORE_READ(sk, __sk_common.skc_num);
		__u16 dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
		__u64 args[] = {src, sport, dst, dport};

		BPF_SEQ_PRINTF(seq, "4 %pI4 %u ", &args[0], sport);
		BPF_SEQ_PRINTF(seq, "%pI4 %u ", &args[2], dport);
	} else {
		struct in6_addr src = BPF_CORE_READ(sk, __sk_common.skc_v6_rcv_saddr);
		struct in6_addr dst = BPF_CORE_READ(sk, __sk_common.skc_v6_daddr);
		__u16 sport = BPF_CORE_READ(sk, __sk_common.skc_num);
		__u16 dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));

		BPF_SEQ_PRINTF(seq, "6 %pI6c %u ", &src, sport);
		BPF_SEQ_PRINTF(seq, "%pI6c %u ", &dst, dport);
	}
	// The handler's address, resolved in user space: %pS needs Linux 5.13.
	BPF_SEQ_PRINTF(seq, "%u %llu %llx\n", BPF_CORE_READ(sk, __sk_common.skc_state), cookie, (__u64)recvmsg);
	return 0;
}
