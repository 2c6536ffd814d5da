// SPDX-License-Identifier: GPL-2.0
// The IPv6 dst entry counter of the reading task's network namespace, read both ways:
// the shared count (what dst_entries_get_fast() returns) and every CPU's local delta
// (their sum plus the count is dst_entries_get_slow()).
//
// bpf_per_cpu_ptr() refuses percpu_counter->counters (the verifier sees untrusted
// memory), and __per_cpu_offset is not in kallsyms without CONFIG_KALLSYMS_ALL. So the
// per-CPU offsets are measured: every task's CFS runqueue is the per-CPU variable
// `runqueues` of some CPU, whose link-time offset in .data..percpu (from BTF, passed as
// RUNQUEUES_OFFSET) subtracted from its address is __per_cpu_offset[cpu]. The counter's
// copy on that CPU is then read with bpf_probe_read_kernel(), as per_cpu_ptr() would.
// One line per task seen; user space keeps one value per CPU.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

SEC("iter/task")
int PROBE_NAME(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct task_struct *reader;
	struct rq *rq;
	s32 *counters;
	s64 count;
	s32 local = 0;
	int cpu;

	if (!task)
		return 0;
	reader = bpf_get_current_task_btf();
	count = BPF_CORE_READ(reader, nsproxy, net_ns, ipv6.ip6_dst_ops.pcpuc_entries.count);
	counters = BPF_CORE_READ(reader, nsproxy, net_ns, ipv6.ip6_dst_ops.pcpuc_entries.counters);
	if (ctx->meta->seq_num == 0)
		BPF_SEQ_PRINTF(seq, "fast %lld\n", count);
	rq = BPF_CORE_READ(task, se.cfs_rq, rq);
	if (!rq)
		return 0;
	cpu = BPF_CORE_READ(rq, cpu);
	bpf_probe_read_kernel(&local, sizeof(local),
			      (const char *)counters + ((unsigned long)rq - RUNQUEUES_OFFSET));
	BPF_SEQ_PRINTF(seq, "cpu %d %d\n", cpu, local);
	return 0;
}
