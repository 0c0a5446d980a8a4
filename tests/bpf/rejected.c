/* A map that gets pinned by name and a program the verifier refuses (an unchecked lookup). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} left_behind SEC(".maps");

SEC("socket")
int unchecked(struct __sk_buff *skb)
{
	__u32 key = 0;
	__u64 *value = bpf_map_lookup_elem(&left_behind, &key);

	return *value;  /* no NULL check: R0 invalid mem access 'map_value_or_null' */
}

char LICENSE[] SEC("license") = "GPL";
