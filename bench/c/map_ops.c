// A HASH map u32 -> u64 for contenders that open maps only from objects (pylibbpf).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1 << 20);
} counts SEC(".maps");

SEC("socket")
int touch(struct __sk_buff *skb)
{
	__u32 key = 0;
	return bpf_map_lookup_elem(&counts, &key) ? 1 : 0;
}

char LICENSE[] SEC("license") = "GPL";
