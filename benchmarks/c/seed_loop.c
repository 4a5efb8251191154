/* Reference for benchmarks/bench_seed.py: the client agent's hold mode in C, in the same
 * shape, so that the two differ only in the language of the loop. The process forks PROCS
 * children that share the container's port pool; all wait for SIGUSR1 (the bench sends it
 * to every client container at once, as the engine does), then connect() to ADDRESS:PORT
 * until the first failure, keeping every socket, and hold them until SIGTERM (then exit:
 * SO_LINGER 0 resets every connection, so nothing lingers in the kernel).
 *
 * Lines on stdout (line-buffered, each shorter than PIPE_BUF, so children never interleave):
 *   p <proc> <t_s> <connections>        every SAMPLE connections (t_s since SIGUSR1)
 *   r <proc> <connections> <elapsed_s> <cpu_s> <errno name>   when the child stops
 *
 * Usage: seed_loop ADDRESS PORT PROCS SAMPLE     Build: cc -O2 -static -o seed_loop seed_loop.c */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu_s(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec
           + u.ru_stime.tv_usec / 1e6;
}

static int wait_for(sigset_t *set) {
    int sig = 0;
    sigwait(set, &sig);
    return sig;
}

static void child(int proc, struct sockaddr_in *addr, long sample, sigset_t *set) {
    if (wait_for(set) != SIGUSR1) _exit(0);
    struct linger abort_close = {1, 0};
    long n = 0;
    int err = 0;
    double t0 = now(), c0 = cpu_s();
    for (;;) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) { err = errno; break; }
        setsockopt(s, SOL_SOCKET, SO_LINGER, &abort_close, sizeof abort_close);
        if (connect(s, (struct sockaddr *)addr, sizeof *addr)) { err = errno; close(s); break; }
        if (++n % sample == 0) printf("p %d %.6f %ld\n", proc, now() - t0, n);
    }
    double elapsed = now() - t0;
    printf("p %d %.6f %ld\n", proc, elapsed, n);
    printf("r %d %ld %.6f %.6f %s\n", proc, n, elapsed, cpu_s() - c0,
           err == EADDRNOTAVAIL ? "EADDRNOTAVAIL" : strerror(err));
    while (wait_for(set) != SIGTERM) {}
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s ADDRESS PORT PROCS SAMPLE\n", argv[0]);
        return 2;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
        fprintf(stderr, "not an IPv4 address: %s\n", argv[1]);
        return 2;
    }
    int procs = atoi(argv[3]);
    long sample = atol(argv[4]);
    if (procs < 1 || sample < 1) {
        fprintf(stderr, "PROCS and SAMPLE must be positive\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* Blocked before forking: a signal that arrives early waits, pending, for sigwait. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    pid_t pids[256];
    if (procs > 256) procs = 256;
    for (int i = 0; i < procs; i++) {
        pids[i] = fork();
        if (pids[i] == 0) child(i + 1, &addr, sample, &set);
    }
    printf("ready %d\n", procs);
    for (;;) {
        int sig = wait_for(&set);
        for (int i = 0; i < procs; i++) kill(pids[i], sig == SIGUSR1 ? SIGUSR1 : SIGTERM);
        if (sig != SIGUSR1) break;
    }
    for (int i = 0; i < procs; i++) waitpid(pids[i], NULL, 0);
    return 0;
}
