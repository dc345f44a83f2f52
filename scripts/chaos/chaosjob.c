/* The local job of scripts/chaos.sh. Records its run in $RUNS_DIR so the checker can prove that
 * no two attempts of a job ever ran at the same time:
 *
 * - appends its pid to $RUNS_DIR/pids/<job id> (O_APPEND), THEN looks at every pid listed there
 *   before it: one still alive and still running this job (its /proc/PID/environ has
 *   JOB_ID=<id>) is an overlap, recorded as an `alive` line. Of two attempts that overlap, the
 *   one that checks last always sees the other, since each lists itself before it checks.
 * - appends `start ID ATTEMPT MONO_NS PID` and, after sleeping `sleep_ms` of its args,
 *   `end ID ATTEMPT MONO_NS PID` to $RUNS_DIR/runs (CLOCK_MONOTONIC: one machine, so comparable
 *   across processes, and not moved by the clock steps libfaketime applies to a worker).
 * Each line is one write(2) on an O_APPEND file: lines never interleave.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void append(const char *path, const char *line) {
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) { perror(path); exit(3); }
    size_t n = strlen(line);
    if (write(fd, line, n) != (ssize_t)n) { perror("write"); exit(3); }
    close(fd);
}

/* 1 when pid is alive (not a zombie) and its environment holds `needle` (JOB_ID=...). */
static int runs_job(long pid, const char *needle) {
    char path[64], buf[65536];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p || p[1] == 0 || p[2] == 'Z' || p[2] == 'X') return 0;
    snprintf(path, sizeof path, "/proc/%ld/environ", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    ssize_t m = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (m <= 0) return 0;
    size_t nl = strlen(needle);
    for (ssize_t i = 0; i + (ssize_t)nl <= m; i += strlen(buf + i) + 1) {
        if (strncmp(buf + i, needle, nl) == 0 && buf[i + nl] == 0) return 1;
    }
    return 0;
}

int main(void) {
    const char *id = getenv("JOB_ID"), *attempt = getenv("JOB_ATTEMPT");
    const char *dir = getenv("RUNS_DIR"), *args = getenv("JOB_ARGS");
    if (!id || !attempt || !dir) { fprintf(stderr, "JOB_ID, JOB_ATTEMPT, RUNS_DIR needed\n"); return 2; }
    long ms = 100;
    const char *s = args ? strstr(args, "\"sleep_ms\":") : NULL;
    if (s) ms = strtol(s + 11, NULL, 10);
    if (ms < 0 || ms > 60000) ms = 100;
    char pids[4096], runs[4096], line[512], needle[256];
    snprintf(pids, sizeof pids, "%s/pids/%s", dir, id);
    snprintf(runs, sizeof runs, "%s/runs", dir);
    snprintf(needle, sizeof needle, "JOB_ID=%s", id);
    long me = (long)getpid();
    snprintf(line, sizeof line, "%ld\n", me);
    append(pids, line);
    long long start = mono_ns();
    FILE *f = fopen(pids, "r");
    if (f) {
        long pid;
        while (fscanf(f, "%ld", &pid) == 1) {
            if (pid != me && runs_job(pid, needle)) {
                snprintf(line, sizeof line, "alive %s %s %lld %ld %ld\n", id, attempt, start, me, pid);
                append(runs, line);
            }
        }
        fclose(f);
    }
    snprintf(line, sizeof line, "start %s %s %lld %ld\n", id, attempt, start, me);
    append(runs, line);
    struct timespec d = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&d, &d) != 0 && errno == EINTR) {}
    snprintf(line, sizeof line, "end %s %s %lld %ld\n", id, attempt, mono_ns(), me);
    append(runs, line);
    return 0;
}
