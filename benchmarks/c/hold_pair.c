/* Reference for benchmarks/bench_ceiling.py: a C server and C clients holding N connections
 * over loopback in one network namespace, laid out as the agents are on network loopback:
 * WORKERS processes accept on one listener (0.0.0.0:5000) and hold every socket; CLIENTS x
 * PROCS processes connect N / (CLIENTS x PROCS) each and hold them. SPREAD "shared" spreads
 * them as the client agent does: the processes of client k share its DESTS addresses
 * 127.<k>.<hi>.<lo> (model.loopback_destinations), each process going round-robin from its
 * own offset; "own" gives every process DESTS addresses of its own. Prints
 * "<connections> <seconds> <client cpu seconds> <first errno name or OK> <server cpu seconds>"
 * once every client process is done (seconds: from the first connect() to the last; cpu: user
 * + system time of the client processes, as the client agent reports its cpu_s, and of the
 * accept workers, from /proc/<pid>/stat), then stops everything: every client socket has
 * SO_LINGER 0, and each worker sets it on what it holds when told to stop (as the server
 * agent does), so nothing is left behind. Every process stays under RLIMIT_NOFILE 20,000,
 * the engine's cap per container.
 * DESIGN says how the workers accept: "turns" (the default) as the server agent does, one
 * worker at a time (a byte in a pipe is the turn), waiting in poll(), letting connections
 * gather for 1 ms, then accepting every queued one, and while batches keep coming gathering
 * the next without poll(), passing the turn on when out of descriptors; "eager": every
 * worker blocks in accept(), each connection wakes one (the server agent before the turns).
 * "server" and "client" split the pair over two containers as the agents are (the server's
 * container, and the clients' joining its network namespace): the server prints its workers'
 * cpu seconds when sent SIGTERM; the client prints the line above with 0 as server cpu.
 * Build: cc -O2 -static -o hold_pair hold_pair.c
 * Usage: hold_pair both N CLIENTS PROCS WORKERS DESTS shared|own [turns|eager]
 *        hold_pair server WORKERS [turns|eager]
 *        hold_pair client N CLIENTS PROCS DESTS shared|own */
#define _GNU_SOURCE  /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
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

static double proc_cpu(pid_t pid) {  /* utime + stime of a process, seconds */
    char path[64];
    unsigned long ut = 0, st = 0;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    if (fscanf(f, "%*d %*s %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        ut = st = 0;
    fclose(f);
    return (double)(ut + st) / sysconf(_SC_CLK_TCK);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static struct linger abort_close = {1, 0};

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

/* A worker told to stop: reset every connection it holds, as the server agent does. */
static void stop_holding(const int *held, int n) {
    for (int i = 0; i < n; i++) {
        setsockopt(held[i], SOL_SOCKET, SO_LINGER, &abort_close, sizeof abort_close);
        close(held[i]);
    }
    _exit(0);
}

#define GATHER_US 1000  /* the server agent's BATCH_WAIT_S */

/* Accept in turns (see DESIGN above) until SIGTERM. */
static void accept_in_turns(int listener, int turn_in, int turn_out, int *held) {
    int n = 0;
    char token;
    while (read(turn_in, &token, 1) != 1)
        if (stopping) stop_holding(held, n);
    struct pollfd ready = {.fd = listener, .events = POLLIN};
    int busy = 0;  /* the last batch took something: gather the next without poll() */
    for (;;) {
        if (!busy && poll(&ready, 1, -1) < 0) {
            if (stopping) stop_holding(held, n);
            continue;
        }
        usleep(GATHER_US);
        int taken = n;
        for (;;) {
            int a = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
            if (a >= 0) {
                held[n++] = a;
                continue;
            }
            if (errno == EMFILE) {  /* full: the next worker goes on */
                if (write(turn_out, "t", 1) != 1) perror("write");
                while (!stopping) pause();
                stop_holding(held, n);
            }
            break;  /* EAGAIN: the queue is empty */
        }
        busy = n > taken;
        if (stopping) stop_holding(held, n);
    }
}

/* Every worker blocked in accept(): each connection wakes one. */
static void accept_eagerly(int listener, int *held) {
    int n = 0;
    for (;;) {
        int a = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (a >= 0) held[n++] = a;
        else if (errno == EMFILE) while (!stopping) pause();
        if (stopping) stop_holding(held, n);
    }
}

/* Listen on 0.0.0.0:5000 and fork WORKERS processes that accept and hold; their pids. */
static int serve(int workers, int turns, pid_t *pids) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(PORT)};
    int one = 1, listener = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 4096)) {
        perror("listen");
        exit(2);
    }
    int turn[2];
    if (pipe(turn)) exit(2);
    if (turns) fcntl(listener, F_SETFL, O_NONBLOCK);
    int np = 0;
    for (int w = 0; w < workers; w++) {
        pid_t p = fork();
        if (p == 0) {
            static int held[20000];
            struct sigaction term = {.sa_handler = on_term};  /* no SA_RESTART: EINTR */
            sigaction(SIGTERM, &term, NULL);
            if (turns) accept_in_turns(listener, turn[0], turn[1], held);
            else accept_eagerly(listener, held);
        }
        pids[np++] = p;
    }
    if (turns && write(turn[1], "t", 1) != 1) perror("write");  /* the first turn */
    close(listener);
    return np;
}

/* Stop the workers (each resets what it holds) and wait for them. */
static void stop_workers(const pid_t *pids, int np) {
    for (int w = 0; w < np; w++) kill(pids[w], SIGTERM);
    for (int w = 0; w < np; w++) waitpid(pids[w], NULL, 0);
}

static double workers_cpu(const pid_t *pids, int np) {
    double cpu = 0;
    for (int w = 0; w < np; w++) cpu += proc_cpu(pids[w]);
    return cpu;
}

/* Fork CLIENTS x PROCS processes that connect their share and hold it; wait until every one
 * is done. Fills the totals; the processes' pids in ``clients``. */
static void connect_all(long n, int nclients, int per_client, int dests, int own,
                        pid_t *clients, long *total, double *seconds, double *cpu, int *first) {
    int procs = nclients * per_client;
    /* per client process: connections made, errno, cpu, end time (shared with the parent) */
    long *made = mmap(NULL, 4096 * 4, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (made == MAP_FAILED) exit(2);
    int *errs = (int *)(made + 512);
    double *ends = (double *)(made + 1024), *cpus = ends + 512;
    double t0 = now();
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
    double last = t0;
    *total = 0, *cpu = 0, *first = 0;
    for (int c = 0; c < procs; c++) {
        while (ends[c] == 0) usleep(2000);
        *total += made[c];
        *cpu += cpus[c];
        if (errs[c] && !*first) *first = errs[c];
        if (ends[c] > last) last = ends[c];
    }
    *seconds = last - t0;
}

int main(int argc, char **argv) {
    const char *role = argc > 1 ? argv[1] : "";
    int both = !strcmp(role, "both"), server = !strcmp(role, "server");
    int client = !strcmp(role, "client");
    if (!((both && (argc == 8 || argc == 9)) || (server && (argc == 3 || argc == 4))
          || (client && argc == 7))) {
        fprintf(stderr, "usage: hold_pair both N CLIENTS PROCS WORKERS DESTS shared|own "
                        "[turns|eager]\n"
                        "       hold_pair server WORKERS [turns|eager]\n"
                        "       hold_pair client N CLIENTS PROCS DESTS shared|own\n");
        return 2;
    }
    const char *design = both && argc == 9 ? argv[8] : server && argc == 4 ? argv[3] : "turns";
    int turns = strcmp(design, "eager") != 0;
    struct rlimit lim = {20000, 20000};
    setrlimit(RLIMIT_NOFILE, &lim);
    pid_t pids[1024], clients[2048];
    int np = 0;
    if (server || both) np = serve(atoi(argv[server ? 2 : 5]), turns, pids);
    if (server) {  /* hold until SIGTERM, then say what the workers cost */
        sigset_t term;
        int sig;
        sigemptyset(&term);
        sigaddset(&term, SIGTERM);
        sigprocmask(SIG_BLOCK, &term, NULL);
        printf("listening\n");
        fflush(stdout);
        sigwait(&term, &sig);
        printf("%.3f\n", workers_cpu(pids, np));
        fflush(stdout);
        stop_workers(pids, np);
        return 0;
    }
    long total;
    double seconds, cpu;
    int first, nclients = atoi(argv[3]), per_client = atoi(argv[4]);
    connect_all(atol(argv[2]), nclients, per_client, atoi(argv[both ? 6 : 5]),
                !strcmp(argv[both ? 7 : 6], "own"), clients, &total, &seconds, &cpu, &first);
    usleep(200000);  /* the workers accept what is still queued */
    printf("%ld %.6f %.6f %s %.3f\n", total, seconds, cpu, first ? strerror(first) : "OK",
           workers_cpu(pids, np));
    fflush(stdout);
    for (int c = 0; c < nclients * per_client; c++) kill(clients[c], SIGKILL);
    stop_workers(pids, np);
    while (wait(NULL) > 0) {}
    return 0;
}
