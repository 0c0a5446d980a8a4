/* Kernel functions (kfuncs): a call resolved by its vmlinux BTF id, and a weak kfunc no kernel has,
 * guarded by the address check bpf_ksym_exists() expands to, so its poisoned call is never reached. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
extern void bpf_rcu_read_lock(void) __ksym;
extern void bpf_rcu_read_unlock(void) __ksym;
extern void pybpf_no_kfunc(void) __ksym __weak;
int done;
SEC("raw_tp/sys_enter")
int k(void *ctx) {
  bpf_rcu_read_lock(); done = 1; bpf_rcu_read_unlock();
  if (&pybpf_no_kfunc) pybpf_no_kfunc();
  return 0;
}
char LICENSE[] SEC("license") = "GPL";
