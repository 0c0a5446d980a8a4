/* Everything else the reader handles: every BTF map attribute, global data, subprograms in
 * .text (static, global, called from two programs), a callback (bpf_loop), more sections. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct pair { __u64 packets; __u64 bytes; };

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(key_size, 8);
	__uint(value_size, 16);
	__uint(max_entries, 32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(numa_node, 0);
} sized SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, __u32);
	__type(value, struct pair);
	__uint(max_entries, 64);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_BLOOM_FILTER);
	__type(value, __u32);
	__uint(max_entries, 128);
	__uint(map_extra, 3);
} seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 16);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shared SEC(".maps");

struct inner { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u64); };
struct inner first SEC(".maps"), second SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 4);
	__type(key, __u32);
	__array(values, struct inner);
} by_hash SEC(".maps") = {
	.values = { [1] = &first, [3] = &second },
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__type(key, __u64);
	__type(value, __u64);
	__uint(max_entries, 2);
} socks_by_cookie SEC(".maps");

__u64 calls = 100;                    /* .data (counts every run) */
const volatile __u32 factor = 3;      /* .rodata */
const char greeting[] = "hello";      /* .rodata too */
__u64 last_len;                       /* .bss */
static __u32 hidden_total;            /* .bss, static */

static __noinline __u64 scale(__u64 x)
{
	return x * factor;
}

__noinline int global_sum(int a, int b)
{
	return a + b + (int)scale(1);
}

static int add_one(__u32 index, void *ctx)
{
	__u64 *total = ctx;

	*total += index;
	return 0;
}

/* Runs bpf_loop(4) with the callback, calls both subprograms; returns XDP_PASS. */
SEC("xdp")
int with_calls(struct xdp_md *ctx)
{
	__u64 total = 0;

	bpf_loop(4, add_one, &total, 0);  /* 0+1+2+3 */
	calls++;
	last_len = ctx->data_end - ctx->data + total + scale(2);
	hidden_total += global_sum(1, 2);
	return greeting[0] == 'h' ? XDP_PASS : XDP_ABORTED;
}

/* A second program reaching the same subprogram. */
SEC("tc")
int classify(struct __sk_buff *skb)
{
	return global_sum(skb->len, 0) > 0 ? 0 : 2;
}

SEC("socket")
int filter(struct __sk_buff *skb)
{
	return skb->len;
}

SEC("sk_reuseport")
int pick(struct sk_reuseport_md *md)
{
	return SK_PASS;
}

SEC("sk_reuseport/migrate")
int pick_or_migrate(struct sk_reuseport_md *md)
{
	return SK_PASS;
}

SEC("sockops")
int on_sockops(struct bpf_sock_ops *ops)
{
	return 1;
}

SEC("cgroup/skb")
int cgroup_skb(struct __sk_buff *skb)
{
	return 1;
}

SEC("kprobe/do_nanosleep")
int on_sleep(void *ctx)
{
	return 0;
}

SEC("unknown_section")
int untyped(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
