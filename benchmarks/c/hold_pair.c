/* Reference for benchmarks/bench_ceiling.py: a C server and C clients holding N connections
 * over loopback in one network namespace, laid out as the agents are on network loopback:
 * WORKERS processes accept() on one listener (0.0.0.0:5000) and hold every socket; CLIENTS x
 * PROCS processes connect N / (CLIENTS x PROCS) each and hold them. SPREAD "shared" spreads
 * them as the client agent does: the processes of client k share its DESTS addresses
 * 127.<k>.<hi>.<lo> (model.loopback_destinations), each process going round-robin from its
 * own offset; "own" gives every process DESTS addresses of its own. Prints
 * "<connections> <seconds> <client cpu seconds> <first errno name or OK>" once every client
 * process is done (seconds: from the first connect() to the last; cpu: user + system time of
 * the client processes, as the client agent reports its cpu_s), then kills everything: every socket has
 * SO_LINGER 0, so nothing is left behind. Every process stays under RLIMIT_NOFILE 20,000,
 * the engine's cap per container.
 * Build: cc -O2 -static -o hold_pair hold_pair.c
 * Usage: hold_pair N CLIENTS PROCS WORKERS DESTS shared|own */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PORT 5000

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: hold_pair N CLIENTS PROCS WORKERS DESTS shared|own\n");
        return 2;
    }
    long n = atol(argv[1]);
    int per_client = atoi(argv[3]), procs = atoi(argv[2]) * per_client;
    int workers = atoi(argv[4]), dests = atoi(argv[5]), own = strcmp(argv[6], "own") == 0;
    struct rlimit lim = {20000, 20000};
    setrlimit(RLIMIT_NOFILE, &lim);
    struct linger abort_close = {1, 0};
    /* per client process: connections made, errno, end time (shared with the parent) */
    long *made = mmap(NULL, 4096 * 4, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int *errs = (int *)(made + 512);
    double *ends = (double *)(made + 1024), *cpus = ends + 512;
    if (made == MAP_FAILED) return 2;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(PORT)};
    int one = 1, listener = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 4096)) {
        perror("listen");
        return 2;
    }
    pid_t pids[1024];
    int np = 0;
    for (int w = 0; w < workers; w++) {
        pid_t p = fork();
        if (p == 0) {
            for (;;) {
                int a = accept(listener, NULL, NULL);
                if (a >= 0) setsockopt(a, SOL_SOCKET, SO_LINGER, &abort_close, sizeof abort_close);
                else if (errno != EINTR) pause();
            }
        }
        pids[np++] = p;
    }
    close(listener);
    double t0 = now();
    pid_t clients[512];
    for (int c = 0; c < procs; c++) {
        pid_t p = fork();
        if (p == 0) {
            long quota = n / procs, k = 0;
            int err = 0;
            /* shared: client k's processes share 127.k.x.y, from offsets of their own */
            unsigned octet = own ? (unsigned)(c + 1) : (unsigned)(c / per_client + 1);
            long offset = own ? 0 : c % per_client;
            for (; k < quota; k++) {
                long d = (offset + k) % dests;
                struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(PORT)};
                to.sin_addr.s_addr = htonl((127u << 24) | (octet << 16)
                                           | ((unsigned)(d / 255) << 8) | (unsigned)(d % 255 + 1));
                int s = socket(AF_INET, SOCK_STREAM, 0);
                if (s < 0) { err = errno; break; }
                setsockopt(s, SOL_SOCKET, SO_LINGER, &abort_close, sizeof abort_close);
                if (connect(s, (struct sockaddr *)&to, sizeof to)) { err = errno; close(s); break; }
            }
            struct rusage use;
            getrusage(RUSAGE_SELF, &use);
            made[c] = k;
            errs[c] = err;
            cpus[c] = use.ru_utime.tv_sec + use.ru_utime.tv_usec / 1e6 + use.ru_stime.tv_sec
                      + use.ru_stime.tv_usec / 1e6;
            ends[c] = now();
            pause();  /* hold until killed */
            _exit(0);
        }
        clients[c] = p;
    }
    long total = 0;
    int first = 0;
    double cpu = 0;
    double last = t0;
    for (int c = 0; c < procs; c++) {
        while (ends[c] == 0) usleep(2000);
        total += made[c];
        cpu += cpus[c];
        if (errs[c] && !first) first = errs[c];
        if (ends[c] > last) last = ends[c];
    }
    printf("%ld %.6f %.6f %s\n", total, last - t0, cpu, first ? strerror(first) : "OK");
    fflush(stdout);
    for (int c = 0; c < procs; c++) kill(clients[c], SIGKILL);
    for (int w = 0; w < np; w++) kill(pids[w], SIGKILL);
    while (wait(NULL) > 0) {}
    return 0;
}
