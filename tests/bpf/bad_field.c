/* A BTF map definition with an attribute libbpf does not know: reading it must name 'colour'. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
	__uint(colour, 7);
} painted SEC(".maps");

char LICENSE[] SEC("license") = "GPL";
