/* Every map definition shown in seeds/maps.md, verbatim, and programs that use them. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* libbpf 1.x no longer defines the legacy struct; this is its layout (linux/bpf.h of old). */
struct bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

#define INNER_MAX_ENTRIES 4
#define MAX_ENTRIES 8

/* Legacy Maps */
struct bpf_map_def my_map SEC("maps") = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(int),
	.value_size = sizeof(int),
	.max_entries = 100,
	.map_flags = BPF_F_NO_PREALLOC,
};

/* BTF Style Maps */
struct my_value { int x, y, z; };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, int);
	__type(value, struct my_value);
	__uint(max_entries, 16);
} icmpcnt SEC(".maps");

/* Static values: a map-in-map */
struct inner_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, INNER_MAX_ENTRIES);
	__type(key, __u32);
	__type(value, __u32);
} inner_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, __u32);
	__type(value, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_ARRAY);
		__uint(max_entries, INNER_MAX_ENTRIES);
		__type(key, __u32);
		__type(value, __u32);
	});
} m_array_of_maps SEC(".maps") = {
	.values = { (void *)&inner_map, 0, 0, 0, 0, 0, 0, 0 },
};

/* Static values: a tail-call map */
int tailcall_1(struct xdp_md *ctx);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__uint(key_size, sizeof(__u32));
	__array(values, int (void *));
} prog_array_init SEC(".maps") = {
	.values = {
		[1] = (void *)&tailcall_1,
	},
};

/* The tail call target: counts in icmpcnt[1].y and drops. */
SEC("xdp")
int tailcall_1(struct xdp_md *ctx)
{
	int key = 1;
	struct my_value *v = bpf_map_lookup_elem(&icmpcnt, &key);

	if (v)
		v->y++;
	return XDP_DROP;
}

/* Counts packets by length in my_map, bumps icmpcnt[0].x and the inner map through the outer
 * one, then tail-calls slot 1 of prog_array_init (which drops); passes if the call fails. */
SEC("xdp")
int entry(struct xdp_md *ctx)
{
	int key = 0, len = ctx->data_end - ctx->data, one = 1, *count;
	__u32 slot = 0, inner_key = 2, *inner_value;
	struct my_value *v;
	void *inner;

	count = bpf_map_lookup_elem(&my_map, &len);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&my_map, &len, &one, BPF_NOEXIST);
	v = bpf_map_lookup_elem(&icmpcnt, &key);
	if (v)
		v->x++;
	inner = bpf_map_lookup_elem(&m_array_of_maps, &slot);
	if (inner) {
		inner_value = bpf_map_lookup_elem(inner, &inner_key);
		if (inner_value)
			(*inner_value)++;
	}
	bpf_tail_call(ctx, &prog_array_init, 1);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
