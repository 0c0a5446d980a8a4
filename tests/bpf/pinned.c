/* A map pinned by name; built twice, with -DENTRIES=16 and -DENTRIES=32, for reuse and refusal. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#ifndef ENTRIES
#define ENTRIES 16
#endif

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pinned_counts SEC(".maps");

SEC("socket")
int count(struct __sk_buff *skb)
{
	__u32 key = skb->protocol;
	__u64 one = 1, *value = bpf_map_lookup_elem(&pinned_counts, &key);

	if (value)
		__sync_fetch_and_add(value, 1);
	else
		bpf_map_update_elem(&pinned_counts, &key, &one, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
