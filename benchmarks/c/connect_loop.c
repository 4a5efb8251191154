/* Reference for benchmarks/bench_repeat.py: exhaust the ephemeral port range of the current
 * network namespace with connect() to a listener on loopback (a child process accepts and
 * holds each connection, as the server agent does), or to ADDRESS:5000 when given one,
 * holding everything; print "<connections> <seconds> <errno name>" and exit (every socket
 * is reset on exit: SO_LINGER 0, so the reference leaves nothing behind either).
 * Build: cc -O2 -o connect_loop connect_loop.c */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    struct rlimit lim = {20000, 20000};  /* per process: the engine's container cap */
    setrlimit(RLIMIT_NOFILE, &lim);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(5000)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct linger abort_close = {1, 0};
    pid_t server = -1;
    if (argc > 1) {  /* a server elsewhere (ADDRESS:5000): no listener of our own */
        if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
            fprintf(stderr, "not an IPv4 address: %s\n", argv[1]);
            return 2;
        }
        goto connect_loop;
    }
    int one = 1, listener = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 4096)) {
        perror("listen");
        return 2;
    }
    server = fork();
    if (server == 0) {
        for (;;) {
            int a = accept(listener, NULL, NULL);
            if (a >= 0) setsockopt(a, SOL_SOCKET, SO_LINGER, &abort_close, sizeof abort_close);
            else if (errno != EINTR) pause();
        }
    }
    close(listener);
connect_loop:;
    long n = 0;
    int err = 0;
    double t0 = now();
    for (;;) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) { err = errno; break; }
        setsockopt(s, SOL_SOCKET, SO_LINGER, &abort_close, sizeof abort_close);
        if (connect(s, (struct sockaddr *)&addr, sizeof addr)) { err = errno; close(s); break; }
        n++;
    }
    double elapsed = now() - t0;
    if (server > 0) {
        kill(server, SIGKILL);
        waitpid(server, NULL, 0);
    }
    printf("%ld %.6f %s\n", n, elapsed, err == EADDRNOTAVAIL ? "EADDRNOTAVAIL" : strerror(err));
    return 0;
}
