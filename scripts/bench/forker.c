/*
 * corral bench: puts N processes in a cgroup for the group-kill benchmark.
 *
 *   forker N MODE PROCS_FILE...
 *
 * The forker itself stays OUTSIDE the group and is a child subreaper, so it reaps everything that
 * dies (this host's PID 1 is not a general-purpose init). It forks a root process that writes itself
 * into every PROCS_FILE given (e.g. a unified group and a v1 freezer group) and then forks N-1
 * children, which inherit the group. MODE:
 *   pause     every process waits in pause()
 *   forkloop  every child forks a short-lived child in a loop (fork; child _exits; wait) — the
 *             population keeps changing while the kill runs
 *   tree      like pause, but every 10th child double-forks a setsid'd grandchild and exits, as a
 *             daemon does: the grandchild is no longer in the root's process tree (tree-kill's blind spot)
 * When all N are in place it prints "ready <rootpid>\n" on stdout, then reaps until nothing is left
 * and exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static int ready_fd;

static void ready(void) {
  char b = 1;
  while (write(ready_fd, &b, 1) < 0 && errno == EINTR) {}
  close(ready_fd);
}

static void forkloop(void) {
  for (;;) {
    pid_t p = fork();
    if (p == 0) _exit(0);
    if (p > 0) waitpid(p, NULL, 0);
  }
}

static void sleeper(void) {
  for (;;) pause();
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: forker N pause|forkloop|tree PROCS_FILE...\n");
    return 2;
  }
  int n = atoi(argv[1]);
  const char *mode = argv[2];
  int is_loop = !strcmp(mode, "forkloop"), is_tree = !strcmp(mode, "tree");
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) { perror("forker: PR_SET_CHILD_SUBREAPER"); return 2; }
  int pfd[2];
  if (pipe(pfd) < 0) { perror("forker: pipe"); return 2; }
  pid_t root = fork();
  if (root < 0) { perror("forker: fork"); return 2; }
  if (root == 0) {
    close(pfd[0]);
    ready_fd = pfd[1];
    for (int i = 3; i < argc; i++) {
      int fd = open(argv[i], O_WRONLY | O_CLOEXEC);
      if (fd < 0 || write(fd, "0", 1) != 1) { perror(argv[i]); _exit(3); }
      close(fd);
    }
    signal(SIGCHLD, SIG_IGN); /* the root's own children are reaped by the kernel */
    for (int i = 1; i < n; i++) {
      pid_t c = fork();
      if (c < 0) { perror("forker: fork child"); _exit(4); }
      if (c == 0) {
        signal(SIGCHLD, SIG_DFL);
        if (is_tree && i % 10 == 0) {
          pid_t g = fork();
          if (g == 0) { setsid(); ready(); sleeper(); }
          _exit(0); /* the grandchild is orphaned: reparented to the forker (subreaper) */
        }
        ready();
        if (is_loop) forkloop();
        sleeper();
      }
    }
    ready();
    if (is_loop) { signal(SIGCHLD, SIG_DFL); forkloop(); }
    sleeper();
  }
  close(pfd[1]);
  int got = 0;
  char buf[4096];
  while (got < n) {
    ssize_t r = read(pfd[0], buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (int)r;
  }
  close(pfd[0]);
  if (got < n) { fprintf(stderr, "forker: only %d of %d processes came up\n", got, n); }
  printf("ready %d %d\n", (int)root, got);
  fflush(stdout);
  for (;;) {
    pid_t p = wait(NULL);
    if (p < 0 && errno == ECHILD) break;
  }
  return 0;
}
