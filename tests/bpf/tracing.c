// Programs attached by their section names (Collection.attach_all): each sends the caller's
// pid_tgid and a tag to the ring buffer. KPROBES=1 adds kprobe and fentry sections.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096 * 16);
} events SEC(".maps");

static void send(__u64 tag)
{
	__u64 record[2] = {bpf_get_current_pid_tgid(), tag};

	bpf_ringbuf_output(&events, record, sizeof(record), 0);
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
	send(1);
	return 0;
}

SEC("raw_tracepoint/sys_exit")
int on_sys_exit(void *ctx)
{
	return 0;
}

#ifdef KPROBES
SEC("kprobe/do_unlinkat")
int on_unlinkat(void *ctx)
{
	send(2);
	return 0;
}

SEC("kretprobe/do_unlinkat")
int on_unlinkat_return(void *ctx)
{
	send(3);
	return 0;
}

SEC("fentry/do_unlinkat")
int on_unlinkat_entry(void *ctx)
{
	send(4);
	return 0;
}
#endif

char LICENSE[] SEC("license") = "GPL";
