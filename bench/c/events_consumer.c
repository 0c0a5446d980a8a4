/* The C limit for bench/events.py: libbpf's ring_buffer__poll / perf_buffer__poll on a pinned map.
 *
 *   events_consumer ring|perf PIN [latency]
 *
 * Prints "ready", consumes until SIGUSR1, drains, then prints one line:
 *   count CPU_SECONDS LOST [latency_ns ...]
 * CPU is this process's user+system time from "ready" to the end. Built by bench/events.py with
 * gcc against libbpf-dev; never committed as a binary. */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define MAX_LAT 100000

static volatile sig_atomic_t stop;
static long long count, lost;
static int latency;
static unsigned long long lat[MAX_LAT];

static void on_stop(int sig) { (void)sig; stop = 1; }

static unsigned long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static void note(const void *data)
{
	if (latency && count < MAX_LAT) {
		unsigned long long stamp;
		memcpy(&stamp, data, 8);
		lat[count] = now_ns() - stamp;
	}
	count++;
}

static int on_ring(void *ctx, void *data, size_t size) { (void)ctx; (void)size; note(data); return 0; }
static void on_sample(void *ctx, int cpu, void *data, __u32 size) { (void)ctx; (void)cpu; (void)size; note(data); }
static void on_lost(void *ctx, int cpu, __u64 n) { (void)ctx; (void)cpu; lost += n; }

static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
	struct ring_buffer *rb = NULL;
	struct perf_buffer *pb = NULL;
	int fd;
	double start;

	if (argc < 3)
		return 2;
	latency = argc > 3 && !strcmp(argv[3], "latency");
	signal(SIGUSR1, on_stop);
	fd = bpf_obj_get(argv[2]);
	if (fd < 0) {
		perror("bpf_obj_get");
		return 1;
	}
	if (!strcmp(argv[1], "ring"))
		rb = ring_buffer__new(fd, on_ring, NULL, NULL);
	else
		pb = perf_buffer__new(fd, 8, on_sample, on_lost, NULL, NULL);
	if (!rb && !pb) {
		perror("new");
		return 1;
	}
	start = cpu_seconds();
	printf("ready\n");
	fflush(stdout);
	while (!stop) {
		if (rb)
			ring_buffer__poll(rb, 100);
		else
			perf_buffer__poll(pb, 100);
	}
	if (rb)
		ring_buffer__consume(rb);
	else
		perf_buffer__consume(pb);
	printf("%lld %.6f %lld", count, cpu_seconds() - start, lost);
	for (long long i = 0; latency && i < count && i < MAX_LAT; i++)
		printf(" %llu", lat[i]);
	printf("\n");
	return 0;
}
