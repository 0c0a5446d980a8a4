// SPDX-License-Identifier: GPL-2.0
/* The endpoints of bench/dispatch.py (C, so that the kernel's cost per connection is what is
 * measured). Compiled at bench time.
 *
 *   conns server ADDR PORT             accept and close (RST) every connection; prints "ready"
 *   conns client ADDR PORT SECONDS     connect, close with RST, repeat for SECONDS: prints the count,
 *                                      the failures and the errno of the last failure
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct sockaddr_in address(const char *ip, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, ip, &a.sin_addr);
	return a;
}

static void reset(int fd)
{
	struct linger l = { 1, 0 };
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	close(fd);
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "server")) {
		struct sockaddr_in a = address(argv[2], atoi(argv[3]));
		int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 4096)) {
			perror("bind/listen");
			return 1;
		}
		printf("ready\n");
		fflush(stdout);
		for (;;) {
			int c = accept(fd, NULL, NULL);
			if (c >= 0)
				reset(c);
		}
	}
	if (argc == 5 && !strcmp(argv[1], "client")) {
		struct sockaddr_in a = address(argv[2], atoi(argv[3]));
		double end = now() + atof(argv[4]);
		long count = 0, failed = 0, last_errno = 0;
		while (now() < end) {
			int fd = socket(AF_INET, SOCK_STREAM, 0);
			if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
				count++;
			} else {
				failed++;
				last_errno = errno;
			}
			reset(fd);
		}
		printf("%ld %ld %ld\n", count, failed, last_errno);
		return 0;
	}
	fprintf(stderr, "usage: conns server ADDR PORT | client ADDR PORT SECONDS\n");
	return 2;
}
