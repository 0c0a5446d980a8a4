// SPDX-License-Identifier: GPL-2.0
/* The contender of bench/accelerate.py: a hand-written sock_ops + sk_msg pair in the shape of
 * Cilium's and merbridge's socket acceleration (IPv4, key = the 4-tuple). Compiled with clang at
 * bench time, loaded and attached with bpftool. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2

struct sock_key {
	__u32 sip;
	__u32 dip;
	__u32 sport;
	__u32 dport;
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__uint(key_size, sizeof(struct sock_key));
	__uint(value_size, sizeof(int));
} sock_hash SEC(".maps");

SEC("sockops")
int sockops_pair(struct bpf_sock_ops *skops)
{
	struct sock_key key = {};

	if (skops->family != AF_INET)
		return 1;
	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	key.sip = skops->local_ip4;
	key.dip = skops->remote_ip4;
	key.sport = bpf_htonl(skops->local_port);
	key.dport = skops->remote_port;
	bpf_sock_hash_update(skops, &sock_hash, &key, BPF_NOEXIST);
	return 1;
}

SEC("sk_msg")
int sk_msg_pair(struct sk_msg_md *msg)
{
	struct sock_key key = {};

	if (msg->family != AF_INET)
		return SK_PASS;
	key.sip = msg->remote_ip4;
	key.dip = msg->local_ip4;
	key.sport = msg->remote_port;
	key.dport = bpf_htonl(msg->local_port);
	bpf_msg_redirect_hash(msg, &sock_hash, &key, BPF_F_INGRESS);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
