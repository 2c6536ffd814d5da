// SPDX-License-Identifier: GPL-2.0
// The doctor's iterator probe: one line per task, proving that a CO-RE iterator
// builds against this kernel's BTF, loads, attaches and runs.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("iter/task")
int PROBE_NAME(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;

	if (!task)
		return 0;
	BPF_SEQ_PRINTF(ctx->meta->seq, "%d\n", task->pid);
	return 0;
}
