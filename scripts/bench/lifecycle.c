/*
 * corral bench: the syscall limit of a task lifecycle.
 * For each task: mkdir its group under every controller parent given with --ctl, write the control
 * files given for that controller (e.g. cpuset.cpus, cpuset.mems), fork; the child writes itself into
 * every group's cgroup.procs and execs the command; the parent waits, then rmdirs the groups
 * (retrying EBUSY). `--join DIR` adds an existing group the child joins as well, made and removed by
 * nobody here (corral's v1 layout: a shared task joins the cpuset `share` group itself). `-c` tasks are
 * kept in flight. Prints the wall time of the whole batch in ns.
 *
 *   lifecycle -n COUNT -c CONC [-x /bin/true] --ctl PARENT[:file=value[,file=value...]] ... [--join DIR ...]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CTL 16
#define MAX_W 8

struct ctl {
  char *parent;
  int nw;
  char *wfile[MAX_W];
  char *wval[MAX_W];
};

static struct ctl ctls[MAX_CTL];
static int nctl;
static char *joins[MAX_CTL];
static int njoin;
static const char *exe = "/bin/true";

static void die(const char *what, const char *path) {
  fprintf(stderr, "lifecycle: %s %s: %s\n", what, path ? path : "", strerror(errno));
  exit(2);
}

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void writefile(const char *path, const char *val) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) die("open", path);
  if (write(fd, val, strlen(val)) < 0) die("write", path);
  close(fd);
}

static void create_group(int id) {
  char p[4096];
  for (int c = 0; c < nctl; c++) {
    snprintf(p, sizeof p, "%s/t%d", ctls[c].parent, id);
    if (mkdir(p, 0755) < 0) die("mkdir", p);
    for (int w = 0; w < ctls[c].nw; w++) {
      char f[8192];
      snprintf(f, sizeof f, "%s/%s", p, ctls[c].wfile[w]);
      writefile(f, ctls[c].wval[w]);
    }
  }
}

static void remove_group(int id) {
  char p[4096];
  for (int c = 0; c < nctl; c++) {
    snprintf(p, sizeof p, "%s/t%d", ctls[c].parent, id);
    for (int tries = 0;; tries++) {
      if (rmdir(p) == 0) break;
      if (errno == EBUSY && tries < 100000) { sched_yield(); continue; }
      die("rmdir", p);
    }
  }
}

static pid_t start_task(int id) {
  /* Paths are prepared before fork so the child does only open/write/close/execve. */
  char procs[2 * MAX_CTL][4096];
  int np = 0;
  for (int c = 0; c < nctl; c++) snprintf(procs[np++], sizeof procs[0], "%s/t%d/cgroup.procs", ctls[c].parent, id);
  for (int j = 0; j < njoin; j++) snprintf(procs[np++], sizeof procs[0], "%s/cgroup.procs", joins[j]);
  pid_t pid = fork();
  if (pid < 0) die("fork", NULL);
  if (pid == 0) {
    for (int c = 0; c < np; c++) {
      int fd = open(procs[c], O_WRONLY | O_CLOEXEC);
      if (fd < 0 || write(fd, "0", 1) != 1) _exit(126);
      close(fd);
    }
    char *argv[] = {(char *)exe, NULL};
    char *envp[] = {"PATH=/usr/bin:/bin", NULL};
    execve(exe, argv, envp);
    _exit(127);
  }
  return pid;
}

int main(int argc, char **argv) {
  int count = 100, conc = 1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-n") && i + 1 < argc) count = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-c") && i + 1 < argc) conc = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-x") && i + 1 < argc) exe = argv[++i];
    else if (!strcmp(argv[i], "--ctl") && i + 1 < argc && nctl < MAX_CTL) {
      char *spec = argv[++i];
      struct ctl *c = &ctls[nctl++];
      char *colon = strchr(spec, ':');
      c->parent = spec;
      if (colon) {
        *colon = 0;
        for (char *tok = strtok(colon + 1, ","); tok && c->nw < MAX_W; tok = strtok(NULL, ",")) {
          char *eq = strchr(tok, '=');
          if (!eq) { fprintf(stderr, "lifecycle: bad write spec %s\n", tok); return 2; }
          *eq = 0;
          c->wfile[c->nw] = tok;
          c->wval[c->nw] = eq + 1;
          c->nw++;
        }
      }
    } else if (!strcmp(argv[i], "--join") && i + 1 < argc && njoin < MAX_CTL) {
      joins[njoin++] = argv[++i];
    } else {
      fprintf(stderr, "usage: lifecycle -n COUNT -c CONC [-x EXE] --ctl PARENT[:file=val,...] ... [--join DIR ...]\n");
      return 2;
    }
  }
  if (conc < 1) conc = 1;
  pid_t *slots = calloc((size_t)conc, sizeof(pid_t));
  int *slot_id = calloc((size_t)conc, sizeof(int));
  int started = 0, done = 0, failed = 0;
  long long t0 = now_ns();
  for (int s = 0; s < conc && started < count; s++) {
    create_group(started);
    slot_id[s] = started;
    slots[s] = start_task(started);
    started++;
  }
  while (done < count) {
    int st;
    pid_t pid = waitpid(-1, &st, 0);
    if (pid < 0) { if (errno == EINTR) continue; die("waitpid", NULL); }
    int s = 0;
    while (s < conc && slots[s] != pid) s++;
    if (s == conc) continue;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) failed++;
    remove_group(slot_id[s]);
    done++;
    slots[s] = 0;
    if (started < count) {
      create_group(started);
      slot_id[s] = started;
      slots[s] = start_task(started);
      started++;
    }
  }
  long long t1 = now_ns();
  printf("{\"count\":%d,\"concurrency\":%d,\"elapsedNs\":%lld,\"failed\":%d}\n", count, conc, t1 - t0, failed);
  return failed ? 1 : 0;
}
