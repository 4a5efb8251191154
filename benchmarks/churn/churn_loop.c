/* The churn agent's loop in C, for benchmarks/bench_churn.py only (not part of the tool).
 *
 *   churn_loop client SERVER_IP PORT SECONDS CLOSER   (CLOSER: c = client first, s = server)
 *   churn_loop server PORT                             (answers like agents/churn.py serve)
 *
 * The client does what churn.open_close does, as fast as it can: socket, the same send and
 * receive timeouts, connect, send the one-byte request, read the one-byte reply, (closer s:
 * read EOF), close. It prints one JSON
 * line: connections, errno of the first failure, elapsed_s, user_s, sys_s.
 * The server is one epoll loop, so that it is not what bounds the clients it measures. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int client(const char *ip, int port, double seconds, char closer) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &addr.sin_addr);
    long done = 0;
    int err = 0;
    double start = now(), end = start + seconds, t = start;
    char buf[8];
    struct timeval timeout = {.tv_sec = 3};  /* the agent's --connect-timeout default */
    while (t < end) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) { err = errno; break; }
        if (setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout) < 0 ||
            setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) < 0 ||
            connect(s, (struct sockaddr *)&addr, sizeof addr) < 0 ||
            send(s, &closer, 1, 0) != 1 || recv(s, buf, 1, 0) != 1 ||
            (closer == 's' && recv(s, buf, 1, 0) != 0)) {
            err = errno ? errno : ECONNRESET;
            close(s);
            break;
        }
        close(s);
        done++;
        t = now();
    }
    double elapsed = (t < end ? t : end) - start;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"event\":\"result\",\"impl\":\"c\",\"connections\":%ld,\"errno\":%d,"
           "\"elapsed_s\":%.6f,\"user_s\":%.6f,\"sys_s\":%.6f}\n", done, err, elapsed,
           ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
           ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    return 0;
}

static int server(int port) {
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (bind(l, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(l, 4096) < 0) {
        perror("listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = l}, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    printf("{\"event\":\"listening\",\"port\":%d}\n", port);
    fflush(stdout);
    char buf[64];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == l) {
                int c;
                while ((c = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            ssize_t got = recv(fd, buf, sizeof buf, 0);
            if (got < 0 && errno == EAGAIN) continue;
            if (got > 0 && send(fd, "!", 1, MSG_NOSIGNAL) != 1) got = 0;
            if (got <= 0 || memchr(buf, 's', got)) close(fd);  /* close drops the epoll entry */
        }
    }
}

int main(int argc, char **argv) {
    if (argc == 6 && !strcmp(argv[1], "client"))
        return client(argv[2], atoi(argv[3]), atof(argv[4]), argv[5][0]);
    if (argc == 3 && !strcmp(argv[1], "server")) return server(atoi(argv[2]));
    fprintf(stderr, "usage: churn_loop client IP PORT SECONDS c|s | churn_loop server PORT\n");
    return 2;
}
