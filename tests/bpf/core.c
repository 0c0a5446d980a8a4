/* A CO-RE program in the libbpf-tools style, compiled once and loaded on every kernel: it reads
 * the current task's pid, tgid, real_parent->tgid and comm with BPF_CORE_READ, the task state
 * under whichever name this kernel gives it (bpf_core_field_exists on a ___flavor), an enum
 * value, and a field no kernel has (its read is poisoned but never reached); externs: the
 * kernel version, configuration values, a kernel symbol's address, a weak symbol no kernel has.
 * Run it with BPF_PROG_TEST_RUN: a raw tracepoint program runs in the calling task. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct task_struct {
	int pid;
	int tgid;
	struct task_struct *real_parent;
	char comm[16];
	unsigned int __state;
} __attribute__((preserve_access_index));

struct task_struct___old {       /* before Linux 5.14 the state was 'long state' */
	long state;
} __attribute__((preserve_access_index));

struct task_struct___never {     /* no kernel has this field */
	int pybpf_no_such_field;
} __attribute__((preserve_access_index));

enum pid_type { PIDTYPE_PID, PIDTYPE_TGID, PIDTYPE_PGID, PIDTYPE_SID, PIDTYPE_MAX };

extern int LINUX_KERNEL_VERSION __kconfig;
extern _Bool CONFIG_BPF_SYSCALL __kconfig __weak;
extern int CONFIG_PYBPF_NEVER __kconfig __weak;
extern const void bpf_map_put __ksym;
extern const void pybpf_no_such_symbol __ksym __weak;

const volatile int target_tgid = 0;      /* set through CollectionSpec.variables before load */

int pid, tgid, parent_tgid, has_new_state, has_never;
long state = -1, pgid_value = -1, max_value = -1, task_size = -1;
char comm[16];
int runs;
int kernel_version, bpf_syscall = -1, never_config = -1;
long map_put_address, missing_address = -1;

SEC("raw_tp/sys_enter")
int read_task(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	if (target_tgid && BPF_CORE_READ(task, tgid) != target_tgid)
		return 1;
	pid = BPF_CORE_READ(task, pid);
	tgid = BPF_CORE_READ(task, tgid);
	parent_tgid = BPF_CORE_READ(task, real_parent, tgid);
	BPF_CORE_READ_STR_INTO(&comm, task, comm);
	if (bpf_core_field_exists(task->__state)) {
		has_new_state = 1;
		state = BPF_CORE_READ(task, __state);
	} else {
		state = BPF_CORE_READ((struct task_struct___old *)task, state);
	}
	if (bpf_core_field_exists(((struct task_struct___never *)task)->pybpf_no_such_field)) {
		has_never = 1;
		has_never = BPF_CORE_READ((struct task_struct___never *)task, pybpf_no_such_field);
	}
	pgid_value = bpf_core_enum_value(enum pid_type, PIDTYPE_PGID);
	max_value = bpf_core_enum_value(enum pid_type, PIDTYPE_MAX);
	task_size = bpf_core_type_size(struct task_struct);
	kernel_version = LINUX_KERNEL_VERSION;
	bpf_syscall = CONFIG_BPF_SYSCALL;
	never_config = CONFIG_PYBPF_NEVER;
	map_put_address = (long)&bpf_map_put;
	missing_address = (long)&pybpf_no_such_symbol;
	runs++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
