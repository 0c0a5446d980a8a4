/* A process for uprobe tests: waits for a line on stdin, then calls the probed functions COUNT
 * times with 0 .. COUNT-1 and prints their sum. Built as a PIE executable, with LIBRARY as a
 * shared library too. */
#include <stdio.h>
#include <stdlib.h>

#ifdef LIBRARY
__attribute__((noinline)) int pybpf_lib_target(int x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}
#else
int pybpf_lib_target(int x);

__attribute__((noinline)) int pybpf_exe_target(int x)
{
	__asm__ volatile("" ::: "memory");
	return x * 2;
}

int main(int argc, char **argv)
{
	int count = argc > 1 ? atoi(argv[1]) : 1;
	long sum = 0;
	char line[16];

	if (!fgets(line, sizeof(line), stdin))
		return 1;
	for (int i = 0; i < count; i++)
		sum += pybpf_exe_target(i) + pybpf_lib_target(i);
	printf("%ld\n", sum);
	return 0;
}
#endif
