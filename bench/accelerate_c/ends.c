// SPDX-License-Identifier: GPL-2.0
/* The client and server of bench/accelerate.py, the same for every row (C: the endpoints must
 * not hide the kernel's cost). Compiled at bench time.
 *
 *   ends server PORT            accept one connection at a time on 127.0.0.1:PORT (0: a free port);
 *                               prints "ready PORT"; the first byte
 *                               says what to do: 'R' echo fixed-size messages, 'T' count bytes to
 *                               EOF and answer the count (8 bytes)
 *   ends rtt PORT COUNT SIZE    COUNT ping-pongs of SIZE bytes (after COUNT/10 unmeasured):
 *                               prints "p50_us p99_us"
 *   ends bulk PORT BYTES CHUNK  send BYTES in CHUNK-byte writes, half-close, wait for the count:
 *                               prints "seconds"
 */
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A blocking recv() on an accelerated socket can fail with EAGAIN once when the peer's FIN wakes
 * it with nothing queued (tcp_bpf_recvmsg); it is retried, as EINTR. */
static int errno_is_retry(void)
{
	return errno == EINTR || errno == EAGAIN;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void full(int fd, void *buf, size_t len, int reading)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = reading ? recv(fd, (char *)buf + done, len - done, 0) : send(fd, (char *)buf + done, len - done, 0);
		if (n < 0 && (errno_is_retry()))
			continue;
		if (n <= 0) {
			perror(reading ? "recv" : "send");
			exit(1);
		}
		done += n;
	}
}

/* ENDS_BUSY_POLL=usec sets SO_BUSY_POLL on every socket (a layout the bench tries). */
static void tune(int fd)
{
	const char *busy = getenv("ENDS_BUSY_POLL");
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (busy) {
		int usec = atoi(busy);
		setsockopt(fd, SOL_SOCKET, SO_BUSY_POLL, &usec, sizeof(usec));
	}
}

static int connect_to(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		perror("connect");
		exit(1);
	}
	tune(fd);
	return fd;
}

static void serve(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	static char buf[1 << 20];
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 64)) {
		perror("bind/listen");
		exit(1);
	}
	socklen_t len = sizeof(a);
	getsockname(fd, (struct sockaddr *)&a, &len);
	printf("ready %d\n", ntohs(a.sin_port));
	fflush(stdout);
	for (;;) {
		int c = accept(fd, NULL, NULL);
		char mode;
		if (c < 0)
			continue;
		tune(c);
		if (recv(c, &mode, 1, MSG_WAITALL) != 1) {
			close(c);
			continue;
		}
		if (mode == 'R') {
			uint32_t size;
			full(c, &size, 4, 1);
			for (;;) {
				ssize_t n = recv(c, buf, size, MSG_WAITALL);
				if (n <= 0)
					break;
				full(c, buf, n, 0);
			}
		} else if (mode == 'T') {
			uint64_t total = 0;
			ssize_t n;
			while ((n = recv(c, buf, sizeof(buf), 0)) != 0) {
				if (n < 0) {
					if (errno_is_retry())
						continue;
					break;
				}
				total += n;
			}
			full(c, &total, 8, 0);
		}
		close(c);
	}
}

static void rtt(int port, int count, uint32_t size)
{
	int fd = connect_to(port), warm = count / 10;
	char *buf = calloc(1, size);
	double *t = calloc(count, sizeof(double));
	full(fd, "R", 1, 0);
	full(fd, &size, 4, 0);
	for (int i = 0; i < warm + count; i++) {
		double start = now();
		full(fd, buf, size, 0);
		full(fd, buf, size, 1);
		if (i >= warm)
			t[i - warm] = (now() - start) * 1e6;
	}
	qsort(t, count, sizeof(double), cmp);
	printf("%.2f %.2f\n", t[count / 2], t[(int)(count * 0.99)]);
	close(fd);
}

static void bulk(int port, uint64_t bytes, size_t chunk)
{
	int fd = connect_to(port);
	char *buf = malloc(chunk);
	uint64_t total = 0, sent = 0;
	double start;
	memset(buf, 'x', chunk);
	full(fd, "T", 1, 0);
	start = now();
	while (sent < bytes) {
		size_t n = bytes - sent < chunk ? bytes - sent : chunk;
		full(fd, buf, n, 0);
		sent += n;
	}
	shutdown(fd, SHUT_WR);
	full(fd, &total, 8, 1);
	if (total != bytes) {
		fprintf(stderr, "sink counted %llu of %llu bytes\n", (unsigned long long)total, (unsigned long long)bytes);
		exit(1);
	}
	printf("%.6f\n", now() - start);
	close(fd);
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "server"))
		serve(atoi(argv[2]));
	else if (argc == 5 && !strcmp(argv[1], "rtt"))
		rtt(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
	else if (argc == 5 && !strcmp(argv[1], "bulk"))
		bulk(atoi(argv[2]), strtoull(argv[3], NULL, 0), strtoul(argv[4], NULL, 0));
	else {
		fprintf(stderr, "usage: ends server PORT | rtt PORT COUNT SIZE | bulk PORT BYTES CHUNK\n");
		return 2;
	}
	return 0;
}
