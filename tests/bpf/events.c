// Event maps for tests/test_events.py: a USER_RINGBUF drained by a tc program into a RINGBUF.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
	__uint(max_entries, 4096 * 4);
} requests SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096 * 16);
} replies SEC(".maps");

static long echo(struct bpf_dynptr *dynptr, void *ctx)
{
	__u64 value = 0;

	if (bpf_dynptr_read(&value, sizeof(value), dynptr, 0, 0))
		return 1;
	value += 1;
	bpf_ringbuf_output(&replies, &value, sizeof(value), 0);
	return 0;
}

SEC("tc")
int drain(struct __sk_buff *skb)
{
	return bpf_user_ringbuf_drain(&requests, echo, NULL, 0);
}

char LICENSE[] SEC("license") = "GPL";
