#include "core/thread_pool.h"

#include "core/error.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

namespace ccn {
namespace {

thread_local bool inside_parallel_region = false;

class ThreadPool {
 public:
  explicit ThreadPool(int n) {
    try {
      resize(n);
    } catch (const std::exception&) {
      // too few threads can be started (a process or memory limit): work on the caller alone
    }
  }
  ~ThreadPool() { stop(); }

  int size() const { return size_.load(); }  // workers + the caller

  // Waits for a parallel region in progress to end: its workers must not vanish under it.
  // If a thread cannot be started, the pool keeps only the caller and this throws.
  void resize(int n) {
    std::lock_guard<std::mutex> run_lock(run_mutex_);
    stop();
    stopping_ = false;
    // New workers wait for the next region, not one that ran before a resize.
    const uint64_t seen = generation_;
    try {
      for (int i = 1; i < n; ++i) workers_.emplace_back([this, i, seen] { worker_loop(i, seen); });
    } catch (const std::system_error& e) {
      const size_t started = workers_.size();
      stop();
      stopping_ = false;
      size_ = 1;
      throw std::runtime_error(detail::format("set_num_threads(", n, "): could not start thread ", started + 1,
                                              " (", e.what(), "); running on 1 thread"));
    }
    size_ = static_cast<int>(workers_.size()) + 1;
  }

  // Runs task(k) for k in [0, tasks) with task k on thread k (the caller runs task 0).
  // Tasks beyond the pool's size (after a resize since the caller counted) run on the caller.
  void run(int tasks, const std::function<void(int)>& task) {
    std::lock_guard<std::mutex> run_lock(run_mutex_);  // one parallel region at a time
    const int threads = std::min(tasks, size());
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = &task;
      tasks_ = threads;
      pending_ = threads - 1;
      error_ = nullptr;
      ++generation_;
    }
    cv_start_.notify_all();
    run_one(task, 0);
    for (int k = threads; k < tasks; ++k) run_one(task, k);
    std::unique_lock<std::mutex> lock(mutex_);
    cv_done_.wait(lock, [this] { return pending_ == 0; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void run_one(const std::function<void(int)>& task, int k) {
    inside_parallel_region = true;
    try {
      task(k);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    inside_parallel_region = false;
  }

  void worker_loop(int k, uint64_t seen) {
    for (;;) {
      const std::function<void(int)>* task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_start_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
        if (k >= tasks_) continue;
        task = task_;
      }
      run_one(*task, k);
      std::lock_guard<std::mutex> lock(mutex_);
      if (--pending_ == 0) cv_done_.notify_one();
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    cv_start_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex run_mutex_, mutex_;
  std::condition_variable cv_start_, cv_done_;
  const std::function<void(int)>* task_ = nullptr;
  int tasks_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
  std::atomic<int> size_{1};
};

int default_threads() {
  if (const char* env = std::getenv("CCN_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

ThreadPool& pool() {
  static ThreadPool* p = new ThreadPool(default_threads());  // never destroyed: workers outlive statics
  return *p;
}

}  // namespace

int num_threads() { return pool().size(); }

void set_num_threads(int n) {
  CCN_CHECK(!inside_parallel_region, "set_num_threads cannot be called from inside a parallel region");
  pool().resize(std::max(1, n));
}

void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t chunks = std::min<int64_t>(num_threads(), (n + grain - 1) / grain);
  if (chunks <= 1 || inside_parallel_region) {
    fn(0, n);
    return;
  }
  pool().run(static_cast<int>(chunks), [&](int k) {
    int64_t begin = n * k / chunks, end = n * (k + 1) / chunks;
    if (begin < end) fn(begin, end);
  });
}

}  // namespace ccn
