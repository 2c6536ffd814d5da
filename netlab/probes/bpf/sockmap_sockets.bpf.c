// SPDX-License-Identifier: GPL-2.0
// One line per entry of a sockmap or sockhash: the key's words, then the socket that
// holds the key: family, state, its own ports, whether a file still refers to it, its
// network namespace, cookie, recvmsg handler and address, then its own addresses.
//
// User space cannot get the socket of a sockhash entry whose value is 4 bytes (Cilium's
// cilium_sock_ops): the lookup answers ENOSPC. The map's own iterator (Linux 5.10+)
// hands the program each key with its struct sock.
//
// Everything is printed as numbers: %pS and %pI6 in bpf_seq_printf are not on every
// kernel this runs on (5.10 lacks %pS); user space resolves the handler's address.
// KEY_WORDS (key size / 4) comes with -D: an iterator that reads past the map's key size
// is refused at attach time.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

SEC("iter/sockmap")
int PROBE_NAME(struct bpf_iter__sockmap *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	__u32 *key = ctx->key;
	struct sock *sk = ctx->sk;
	__u32 s6[4], d6[4];
	int i;

	if (!key)
		return 0;
#pragma unroll
	for (i = 0; i < KEY_WORDS; i++)
		BPF_SEQ_PRINTF(seq, "%x ", key[i]);
	if (!sk) {
		BPF_SEQ_PRINTF(seq, "-\n");
		return 0;
	}
	BPF_SEQ_PRINTF(seq, "| %u %u %u %u %u ",
		       BPF_CORE_READ(sk, __sk_common.skc_family),
		       BPF_CORE_READ(sk, __sk_common.skc_state),
		       BPF_CORE_READ(sk, __sk_common.skc_num),
		       bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport)),
		       BPF_CORE_READ(sk, sk_socket) == 0);
	BPF_SEQ_PRINTF(seq, "%u %llu %llx %llx ",
		       BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum),
		       BPF_CORE_READ(sk, __sk_common.skc_cookie.counter),
		       (__u64)BPF_CORE_READ(sk, __sk_common.skc_prot, recvmsg),
		       (__u64)sk);
	BPF_CORE_READ_INTO(&s6, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32);
	BPF_CORE_READ_INTO(&d6, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr32);
	BPF_SEQ_PRINTF(seq, "%x %x ",
		       BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr),
		       BPF_CORE_READ(sk, __sk_common.skc_daddr));
	BPF_SEQ_PRINTF(seq, "%x %x %x %x ", s6[0], s6[1], s6[2], s6[3]);
	BPF_SEQ_PRINTF(seq, "%x %x %x %x\n", d6[0], d6[1], d6[2], d6[3]);
	return 0;
}
