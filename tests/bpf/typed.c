/* Maps whose keys and values pybpf types from BTF alone: a struct with a char array, an enum,
 * bitfields and a nested union; no pinning, so bpftool can load it anywhere. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

enum state { IDLE = 0, BUSY = 1, GONE = 7 };

struct flow {
	char comm[16];
	__u64 bytes;
	enum state state;
	__u32 proto : 4, flags : 12;
	union { __u32 addr4; __u8 addr6[16]; } addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, struct flow);
} flows SEC(".maps");

struct pair { __u64 packets; __u64 bytes; };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct pair);
} stats SEC(".maps");

__u64 calls = 100;                    /* .data */
const volatile __u32 factor = 3;      /* .rodata */
const char greeting[] = "hello";      /* .rodata */

SEC("socket")
int touch(struct __sk_buff *skb)
{
	__u32 key = 1;
	struct flow *f = bpf_map_lookup_elem(&flows, &key);
	struct pair *p = bpf_map_lookup_elem(&stats, &key);
	if (f)
		f->bytes += skb->len * factor;
	if (p)
		p->packets += greeting[0];
	calls++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
