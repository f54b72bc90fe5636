// Uses the installed evnet: opens a poller, hands it a task from another thread and polls
// until the task stops the loop. Exits 0 only if the task ran.
#include <evnet/poller.h>

#include <cstdio>
#include <thread>

int main() {
  auto p = evnet::poller::open();
  if (!p) {
    std::fprintf(stderr, "poller::open: %s\n", p.error().message().c_str());
    return 1;
  }
  evnet::poller& loop = **p;
  bool ran = false;
  std::thread producer([&] {
    auto ec = loop.trigger(evnet::task_priority::high, [&] {
      ran = true;
      loop.stop();
    });
    if (ec) std::fprintf(stderr, "trigger: %s\n", ec.message().c_str());
  });
  std::error_code ec = loop.poll();
  producer.join();
  if (ec || !ran) {
    std::fprintf(stderr, "poll ended with '%s', task ran: %d\n", ec.message().c_str(), ran);
    return 1;
  }
  std::printf("consumer ok (backend %s)\n", std::string(loop.backend_name()).c_str());
  return 0;
}
