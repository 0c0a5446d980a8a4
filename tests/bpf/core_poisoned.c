/* A CO-RE read of a field no kernel has, not guarded by bpf_core_field_exists: the relocation is
 * poisoned and the verifier reaches it, so loading fails naming the field, type and program. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct task_struct {
	int pybpf_no_such_field;
} __attribute__((preserve_access_index));

int seen;

SEC("raw_tp/sys_enter")
int reads_missing(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	seen = BPF_CORE_READ(task, pybpf_no_such_field);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
