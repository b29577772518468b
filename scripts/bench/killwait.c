/*
 * corral bench: the event-driven limit of a v2 group kill.
 *
 *   killwait GROUP_DIR
 *
 * Writes "1" to GROUP_DIR/cgroup.kill, then sleeps in poll(2) on GROUP_DIR/cgroup.events (the kernel
 * wakes it with POLLPRI on each change) until it reads "populated 0", and prints the microseconds
 * between the write and that read. This is what corral's kill does without Node around it: it waits
 * for an event instead of re-reading in a busy loop, as the bash baseline does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int populated(int fd) {
  char buf[256];
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  if (n < 0) return -1;
  buf[n] = 0;
  return strstr(buf, "populated 0") == NULL;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: killwait GROUP_DIR\n");
    return 2;
  }
  char kill_path[4096], events_path[4096];
  snprintf(kill_path, sizeof kill_path, "%s/cgroup.kill", argv[1]);
  snprintf(events_path, sizeof events_path, "%s/cgroup.events", argv[1]);
  int ev = open(events_path, O_RDONLY | O_CLOEXEC);
  int kf = open(kill_path, O_WRONLY | O_CLOEXEC);
  if (ev < 0 || kf < 0) {
    perror("open");
    return 1;
  }
  double t0 = now_us();
  if (write(kf, "1", 1) != 1) {
    perror("write cgroup.kill");
    return 1;
  }
  for (;;) {
    int p = populated(ev);
    if (p < 0) {
      perror("read cgroup.events");
      return 1;
    }
    if (p == 0) break;
    struct pollfd pfd = {.fd = ev, .events = POLLPRI};
    if (poll(&pfd, 1, 10000) < 0 && errno != EINTR) {
      perror("poll");
      return 1;
    }
  }
  printf("%.1f\n", now_us() - t0);
  return 0;
}
