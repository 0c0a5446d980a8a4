/* BPF_CORE_READ_BITFIELD_PROBED of three bitfields: byte offset, byte size, signedness and the two
 * shifts relocated per field (tests/test_core.py replays the read against made-up layouts). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
struct bits { unsigned int a : 3; int b : 5; unsigned long long c : 40; } __attribute__((preserve_access_index));
long out[12];
SEC("raw_tp/sys_enter")
int f(struct bits *p) {
  out[0] = BPF_CORE_READ_BITFIELD_PROBED(p, a);
  out[1] = BPF_CORE_READ_BITFIELD_PROBED(p, b);
  out[2] = BPF_CORE_READ_BITFIELD_PROBED(p, c);
  return 0;
}
char LICENSE[] SEC("license") = "GPL";
