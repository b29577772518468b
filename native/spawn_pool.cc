// Why a pool: creating a thread (clone with CLONE_THREAD) takes the kernel's
// cgroup_threadgroup_rwsem for reading, and every v1 cgroup.procs write (a spawn's join) takes it
// for writing across an RCU grace period. A pthread_create per spawn on the event-loop thread
// therefore stalled the loop for 10-100+ ms whenever other spawns were joining their v1 groups.
// Here the loop thread only queues a job and wakes a thread; new workers are created by the pool's
// manager thread, off the loop. Workers idle for kIdleExitSec exit (down to none).
#include "spawn_pool.h"

#include <pthread.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <utility>

namespace corral {
namespace {

constexpr size_t kStackSize = 1 << 20;
// Jobs beyond this many running at once wait in the queue (each is still bounded by its timer).
constexpr int kMaxWorkers = 256;
constexpr int kIdleExitSec = 30;

struct Pool {
  std::mutex mu;
  std::condition_variable work_cv;  // workers wait for jobs
  std::condition_variable grow_cv;  // the manager waits for "a job and no idle worker"
  std::deque<std::pair<SpawnPoolFn, void*>> jobs;
  int workers = 0;
  int idle = 0;
  bool manager_started = false;
};

// Never destroyed: detached threads may still use it while the process exits.
Pool& ThePool() {
  static Pool* p = new Pool();
  return *p;
}

bool StartThread(void* (*fn)(void*), void* arg) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, kStackSize);
  pthread_t tid;
  int r = pthread_create(&tid, &attr, fn, arg);
  pthread_attr_destroy(&attr);
  return r == 0;
}

void* WorkerMain(void*) {
  Pool& p = ThePool();
  std::unique_lock<std::mutex> lock(p.mu);
  for (;;) {
    if (p.jobs.empty()) {
      p.idle++;
      bool got = p.work_cv.wait_for(lock, std::chrono::seconds(kIdleExitSec), [&] { return !p.jobs.empty(); });
      p.idle--;
      if (!got) {
        p.workers--;
        return nullptr;
      }
    }
    auto job = p.jobs.front();
    p.jobs.pop_front();
    // More queued than idle workers to take them: the manager adds one.
    if (!p.jobs.empty() && p.idle == 0) p.grow_cv.notify_one();
    lock.unlock();
    job.first(job.second);
    lock.lock();
  }
}

void* ManagerMain(void*) {
  Pool& p = ThePool();
  std::unique_lock<std::mutex> lock(p.mu);
  for (;;) {
    p.grow_cv.wait(lock, [&] { return !p.jobs.empty() && p.idle == 0 && p.workers < kMaxWorkers; });
    p.workers++;
    lock.unlock();
    bool ok = StartThread(WorkerMain, nullptr);
    lock.lock();
    if (!ok) {
      p.workers--;
      // Out of threads for now: retry shortly rather than spin (the queued jobs keep their timers).
      p.grow_cv.wait_for(lock, std::chrono::milliseconds(10));
    }
  }
}

}  // namespace

int SubmitSpawnJob(SpawnPoolFn fn, void* arg) {
  Pool& p = ThePool();
  std::lock_guard<std::mutex> lock(p.mu);
  if (!p.manager_started) {
    if (!StartThread(ManagerMain, nullptr)) return EAGAIN;
    p.manager_started = true;
  }
  p.jobs.emplace_back(fn, arg);
  if (p.idle > 0)
    p.work_cv.notify_one();
  else
    p.grow_cv.notify_one();
  return 0;
}

}  // namespace corral
