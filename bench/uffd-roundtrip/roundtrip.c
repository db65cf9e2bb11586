// One userfaultfd fault round-trip run, in plain C: the baseline that the TypeScript
// handler (handler.worker.ts, toucher.worker.ts, ts-run.ts) is measured against. Both
// have the same shape, step for step:
//
//   region   N+1 pages of private anonymous memory, registered MISSING; the extra last
//            page is a sentinel, touched only to wake a handler blocked in read(2).
//   source   one 4 KiB page of pattern bytes, mmap'ed and written before the run.
//   handler  thread pinned to --handler-cpu. --wait poll: poll([uffd, stop eventfd]) then
//            read(2) on a non-blocking uffd, as the kernel's demand_paging_test does
//            (poll(2) on a blocking uffd always answers POLLERR, see userfaultfd(2)).
//            --wait read: blocking read(2) only. Each pagefault message gets one
//            UFFDIO_COPY of the source page.
//   toucher  thread pinned to --toucher-cpu: one plain byte load per page, in order, so
//            each load is one missing fault. Timed from before the first load to after
//            the last. The loaded bytes are summed to check that every page was copied.
//
// Prints one JSON line. Built by run.ts with `gcc -O2 -pthread`.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define PATTERN 0xA5
// The TypeScript Userfaultfd reads up to 64 messages per read(2); so does this loop.
#define BATCH 64

enum wait_mode { WAIT_POLL, WAIT_READ };

struct run {
  enum wait_mode wait;
  int uffd;
  int stopfd;
  uint8_t *region;
  unsigned long pages;
  uint8_t *source;
  int handler_cpu, toucher_cpu;
  // Results.
  unsigned long faults;  // pagefault messages for the timed pages (the sentinel not counted)
  unsigned long eexist;  // COPYs answered EEXIST (page already there): expected 0
  uint64_t ns;
  uint64_t sum;
  // The handler posts this once pinned, so the toucher starts against a waiting handler.
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int ready;
};

static void die(const char *what) {
  fprintf(stderr, "roundtrip: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) die("sched_setaffinity");
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

// Resolves every pagefault in msgs[0..n); returns 1 when the sentinel page was among them.
static int resolve(struct run *r, const struct uffd_msg *msgs, size_t n) {
  uintptr_t sentinel = (uintptr_t)(r->region + r->pages * PAGE);
  int stop = 0;
  for (size_t i = 0; i < n; i++) {
    if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
    uintptr_t page = (uintptr_t)msgs[i].arg.pagefault.address & ~(PAGE - 1);
    struct uffdio_copy copy = {.dst = page, .src = (uintptr_t)r->source, .len = PAGE, .mode = 0};
    if (ioctl(r->uffd, UFFDIO_COPY, &copy) != 0) {
      if (errno != EEXIST) die("ioctl(UFFDIO_COPY)");
      r->eexist++;
    }
    if (page == sentinel) stop = 1;
    else r->faults++;
  }
  return stop;
}

static void *handler(void *arg) {
  struct run *r = arg;
  pin(r->handler_cpu);
  pthread_mutex_lock(&r->lock);
  r->ready = 1;
  pthread_cond_signal(&r->cond);
  pthread_mutex_unlock(&r->lock);

  struct uffd_msg msgs[BATCH];
  struct pollfd fds[2] = {{.fd = r->uffd, .events = POLLIN}, {.fd = r->stopfd, .events = POLLIN}};
  for (;;) {
    if (r->wait == WAIT_POLL) {
      if (poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        die("poll");
      }
      if (fds[1].revents) break;
      if (!(fds[0].revents & POLLIN)) continue;
    }
    ssize_t n = read(r->uffd, msgs, sizeof msgs);
    if (n < 0) {
      // EAGAIN: another wake-up took the message (non-blocking uffd only).
      if (errno == EAGAIN || errno == EINTR) continue;
      die("read(uffd)");
    }
    if (resolve(r, msgs, (size_t)n / sizeof msgs[0])) break;
  }
  return NULL;
}

static void *toucher(void *arg) {
  struct run *r = arg;
  pin(r->toucher_cpu);
  const volatile uint8_t *p = r->region;
  uint64_t sum = 0;
  uint64_t t0 = now_ns();
  for (unsigned long i = 0; i < r->pages; i++) sum += p[i * PAGE];
  uint64_t t1 = now_ns();
  r->ns = t1 - t0;
  r->sum = sum;
  // Wakes a handler blocked in read(2): it resolves this fault and sees the sentinel.
  if (r->wait == WAIT_READ) (void)p[r->pages * PAGE];
  return NULL;
}

static void usage(void) {
  fprintf(stderr, "usage: roundtrip --pages N --toucher-cpu T --handler-cpu H [--wait poll|read]\n");
  exit(2);
}

int main(int argc, char **argv) {
  struct run r = {.wait = WAIT_POLL, .pages = 16384, .handler_cpu = 0, .toucher_cpu = 0};
  for (int i = 1; i < argc; i++) {
    if (i + 1 >= argc) usage();
    const char *k = argv[i], *v = argv[++i];
    if (!strcmp(k, "--pages")) r.pages = strtoul(v, NULL, 0);
    else if (!strcmp(k, "--toucher-cpu")) r.toucher_cpu = atoi(v);
    else if (!strcmp(k, "--handler-cpu")) r.handler_cpu = atoi(v);
    else if (!strcmp(k, "--wait") && !strcmp(v, "poll")) r.wait = WAIT_POLL;
    else if (!strcmp(k, "--wait") && !strcmp(v, "read")) r.wait = WAIT_READ;
    else usage();
  }
  if (r.pages == 0) usage();

  int flags = O_CLOEXEC | (r.wait == WAIT_POLL ? O_NONBLOCK : 0);
  r.uffd = (int)syscall(SYS_userfaultfd, flags);
  if (r.uffd < 0) die("userfaultfd");
  struct uffdio_api api = {.api = UFFD_API, .features = 0};
  if (ioctl(r.uffd, UFFDIO_API, &api) != 0) die("ioctl(UFFDIO_API)");

  size_t len = (r.pages + 1) * PAGE;
  r.region = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (r.region == MAP_FAILED) die("mmap(region)");
  struct uffdio_register reg = {.range = {.start = (uintptr_t)r.region, .len = len}, .mode = UFFDIO_REGISTER_MODE_MISSING};
  if (ioctl(r.uffd, UFFDIO_REGISTER, &reg) != 0) die("ioctl(UFFDIO_REGISTER)");

  r.source = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (r.source == MAP_FAILED) die("mmap(source)");
  memset(r.source, PATTERN, PAGE);

  r.stopfd = eventfd(0, EFD_CLOEXEC);
  if (r.stopfd < 0) die("eventfd");
  pthread_mutex_init(&r.lock, NULL);
  pthread_cond_init(&r.cond, NULL);

  pthread_t h, t;
  if ((errno = pthread_create(&h, NULL, handler, &r)) != 0) die("pthread_create(handler)");
  pthread_mutex_lock(&r.lock);
  while (!r.ready) pthread_cond_wait(&r.cond, &r.lock);
  pthread_mutex_unlock(&r.lock);
  if ((errno = pthread_create(&t, NULL, toucher, &r)) != 0) die("pthread_create(toucher)");
  pthread_join(t, NULL);
  if (r.wait == WAIT_POLL) {
    uint64_t one = 1;
    if (write(r.stopfd, &one, sizeof one) != sizeof one) die("write(stopfd)");
  }
  pthread_join(h, NULL);

  double fps = (double)r.pages * 1e9 / (double)r.ns;
  int ok = r.sum == (uint64_t)r.pages * PATTERN && r.faults == r.pages;
  printf("{\"impl\":\"c\",\"wait\":\"%s\",\"pages\":%lu,\"toucherCpu\":%d,\"handlerCpu\":%d,"
         "\"ns\":%llu,\"faultsPerSec\":%.1f,\"faults\":%lu,\"eexist\":%lu,\"ok\":%s}\n",
         r.wait == WAIT_POLL ? "poll" : "read", r.pages, r.toucher_cpu, r.handler_cpu,
         (unsigned long long)r.ns, fps, r.faults, r.eexist, ok ? "true" : "false");
  munmap(r.region, len);
  munmap(r.source, PAGE);
  close(r.uffd);
  close(r.stopfd);
  return ok ? 0 : 1;
}
