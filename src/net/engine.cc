// evnet — engine: listeners, loop threads, stop, dial, adopt (see include/evnet/engine.h).
#include "evnet/engine.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "evnet/conn.h"
#include "net/internals.h"

namespace evnet {
namespace detail {

std::size_t engine_internals::pick_loop(const socket_address* peer) noexcept {
  const std::size_t n = loops.size();
  if (n <= 1) {
    return 0;
  }
  switch (opts.balance) {
    case balance_policy::least_connections: {
      std::size_t best = 0;
      std::size_t best_count = loops[0]->internals().conn_count.load(std::memory_order_relaxed);
      for (std::size_t i = 1; i < n; ++i) {
        const std::size_t c = loops[i]->internals().conn_count.load(std::memory_order_relaxed);
        if (c < best_count) {
          best = i;
          best_count = c;
        }
      }
      return best;
    }
    case balance_policy::source_hash:
      if (peer != nullptr && (peer->family() == AF_INET || peer->family() == AF_INET6)) {
        // FNV-1a over the address bytes (not the port: one client, one loop).
        const unsigned char* p;
        std::size_t len;
        if (peer->family() == AF_INET) {
          p = reinterpret_cast<const unsigned char*>(
              &reinterpret_cast<const sockaddr_in*>(peer->data())->sin_addr);
          len = 4;
        } else {
          p = reinterpret_cast<const unsigned char*>(
              &reinterpret_cast<const sockaddr_in6*>(peer->data())->sin6_addr);
          len = 16;
        }
        std::uint64_t h = 1469598103934665603ull;
        for (std::size_t i = 0; i < len; ++i) {
          h ^= p[i];
          h *= 1099511628211ull;
        }
        return static_cast<std::size_t>(h % n);
      }
      return 0;
    case balance_policy::round_robin:
    default:
      return round_robin.fetch_add(1, std::memory_order_relaxed) % n;
  }
}

}  // namespace detail

engine::engine() : in_(std::make_unique<detail::engine_internals>()) {}

engine::~engine() = default;

std::error_code engine::run(handler& h, const std::vector<std::string>& addresses,
                            const engine_options& options) {
  if (running_.exchange(true, std::memory_order_acq_rel)) {
    return errc::invalid_argument;
  }
  detail::engine_internals& in = *in_;
  in.h = &h;
  in.opts = options;
  std::size_t n = options.loops;
  if (n == 0) {
    n = std::max(1u, std::thread::hardware_concurrency());
  }
  n = std::min<std::size_t>(n, 256);  // timer ids carry the loop index in 8 bits
  in.opts.loops = n;
  in.sockopts.no_delay = options.no_delay;
  in.sockopts.keep_alive = options.keep_alive;
  in.sockopts.keep_alive_interval = options.keep_alive_interval;
  in.sockopts.send_buffer = options.send_buffer;
  in.sockopts.recv_buffer = options.recv_buffer;
  in.loops.clear();  // the previous run's (see the end of run())
  in.specs.clear();
  in.conn_count.store(0);
  in.refused.store(0);

  auto fail = [&](std::error_code ec) {
    in.loops.clear();  // closes listeners already added
    in.specs.clear();
    in.stop_flag.store(false);
    running_.store(false, std::memory_order_release);
    return ec;
  };

  for (std::size_t i = 0; i < n; ++i) {
    in.loops.push_back(std::make_unique<loop>(*this, i));
    if (std::error_code ec = in.loops.back()->internals().init()) {
      return fail(ec);
    }
  }

  detail::listen_options lo;
  lo.backlog = options.backlog;
  lo.recv_buffer = options.recv_buffer;
  lo.send_buffer = options.send_buffer;
  for (const std::string& url : addresses) {
    auto ep = parse_endpoint(url);
    if (!ep) {
      return fail(ep.error());
    }
    auto spec = std::make_unique<detail::listen_spec>();
    spec->ep = *ep;
    // SO_REUSEPORT spreads TCP and UDP; a Unix path can be bound only once, so loop 0 accepts
    // on it and hands the connections out with the balancing policy, as in acceptor mode.
    const bool per_loop =
        options.accept == accept_model::reuse_port && ep->proto != transport::unix_stream;
    lo.reuse_port = per_loop;
    auto fd = detail::open_listener(spec->ep, lo);
    if (!fd) {
      return fail(fd.error());
    }
    if (ep->proto == transport::unix_stream) {
      auto a = socket_address::resolve(spec->ep);
      if (a) {
        spec->bound = *a;
      }
    } else if (auto a = socket_address::local_of(*fd)) {
      spec->bound = *a;
    }
    detail::listen_spec& s = *spec;
    in.specs.push_back(std::move(spec));
    if (std::error_code ec = in.loops[0]->internals().add_listener(s, *fd)) {
      return fail(ec);
    }
    if (per_loop) {
      endpoint same = s.ep;
      same.port = s.bound.port();  // port 0: every loop binds the port the first one got
      for (std::size_t i = 1; i < n; ++i) {
        auto fdi = detail::open_listener(same, lo);
        if (!fdi) {
          return fail(fdi.error());
        }
        if (std::error_code ec = in.loops[i]->internals().add_listener(s, *fdi)) {
          return fail(ec);
        }
      }
    }
  }

  in.loops_published.store(true, std::memory_order_release);
  h.on_boot(*this);

  std::vector<std::thread> threads;
  threads.reserve(n - 1);
  for (std::size_t i = 1; i < n; ++i) {
    detail::loop_internals* li = &in.loops[i]->internals();
    threads.emplace_back([li] { li->run(); });
  }
  in.loops[0]->internals().run();
  for (auto& t : threads) {
    t.join();
  }

  // No stop() may touch the pollers from here on (signal handlers included).
  in.loops_published.store(false, std::memory_order_seq_cst);
  while (in.stoppers.load(std::memory_order_seq_cst) != 0) {
    std::this_thread::yield();
  }

  h.on_shutdown(*this);
  // The loops are kept, closed, until the next run() or the engine's destruction: another
  // thread may still hold a conn of this run and call send() or close() on it, racing the
  // end of the run; those must find a closed loop that refuses, not freed memory.
  for (auto& l : in.loops) {
    l->internals().release_after_run();
  }
  in.specs.clear();
  in.stop_flag.store(false);
  running_.store(false, std::memory_order_release);
  return {};
}

void engine::stop() noexcept {
  detail::engine_internals& in = *in_;
  in.stoppers.fetch_add(1, std::memory_order_seq_cst);
  in.stop_flag.store(true, std::memory_order_seq_cst);
  if (in.loops_published.load(std::memory_order_seq_cst)) {
    for (auto& l : in.loops) {
      l->internals().poll->stop();
    }
  }
  in.stoppers.fetch_sub(1, std::memory_order_seq_cst);
}

std::size_t engine::loop_count() const noexcept {
  return in_->loops.size();
}

loop& engine::get_loop(std::size_t i) noexcept {
  return *in_->loops[i];
}

std::vector<socket_address> engine::listen_addresses() const {
  std::vector<socket_address> out;
  for (const auto& s : in_->specs) {
    out.push_back(s->bound);
  }
  return out;
}

std::size_t engine::connection_count() const noexcept {
  return in_->conn_count.load(std::memory_order_relaxed);
}

std::uint64_t engine::refused_count() const noexcept {
  return in_->refused.load(std::memory_order_relaxed);
}

timer_id engine::run_after(std::chrono::nanoseconds delay, std::function<void()> fn) {
  if (!running() || in_->loops.empty()) {
    return 0;
  }
  return in_->loops[0]->run_after(delay, std::move(fn));
}

timer_id engine::run_every(std::chrono::nanoseconds period, std::function<void()> fn) {
  if (!running() || in_->loops.empty()) {
    return 0;
  }
  return in_->loops[0]->run_every(period, std::move(fn));
}

void engine::cancel(timer_id id) noexcept {
  if (id == 0 || !running()) {
    return;
  }
  const std::size_t i = id & 0xff;
  if (i < in_->loops.size()) {
    in_->loops[i]->cancel(id);
  }
}

std::error_code engine::dial(std::string_view url, dial_options options) {
  detail::engine_internals& in = *in_;
  if (!running() || in.stop_flag.load(std::memory_order_acquire) || in.loops.empty()) {
    return errc::stopped;
  }
  auto ep = parse_endpoint(url);
  if (!ep) {
    return ep.error();
  }
  if (ep->proto == transport::udp) {
    return errc::bad_address;
  }
  auto addr = socket_address::resolve(*ep);
  if (!addr) {
    return addr.error();
  }
  const std::size_t n = in.loops.size();
  const std::size_t idx = options.loop >= 0 ? static_cast<std::size_t>(options.loop) % n
                                            : (in.opts.balance == balance_policy::source_hash
                                                   ? in.round_robin.fetch_add(1) % n
                                                   : in.pick_loop(nullptr));
  detail::loop_internals& li = in.loops[idx]->internals();
  li.conn_count.fetch_add(1, std::memory_order_relaxed);
  in.conn_count.fetch_add(1, std::memory_order_relaxed);
  auto opts = std::make_shared<dial_options>(std::move(options));
  const transport kind = ep->proto;
  const socket_address target = *addr;
  std::error_code ec =
      li.self.post([&li, opts, kind, target] { li.start_dial(target, kind, *opts); });
  if (ec) {
    li.conn_count.fetch_sub(1, std::memory_order_relaxed);
    in.conn_count.fetch_sub(1, std::memory_order_relaxed);
    return errc::stopped;
  }
  return {};
}

namespace {

// What engine::adopt() accepts: an open, connected, non-listening stream socket of a family the
// loops serve. Reads only; returns its transport and peer.
result<std::pair<transport, socket_address>> check_adoptable(int fd) {
  int type = 0;
  socklen_t len = sizeof type;
  if (fd < 0 || ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
    return make_error_code(errc::bad_descriptor);  // closed, or not a socket (ENOTSOCK)
  }
  if (type != SOCK_STREAM) {
    return make_error_code(errc::unsupported);
  }
  auto local = socket_address::local_of(fd);
  if (!local) {
    return local.error();
  }
  transport kind = transport::tcp;
  switch (local->family()) {
    case AF_INET:
    case AF_INET6:
      break;
    case AF_UNIX:
      kind = transport::unix_stream;
      break;
    default:
      return make_error_code(errc::unsupported);
  }
  int listening = 0;
  len = sizeof listening;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && listening != 0) {
    return make_error_code(errc::invalid_argument);
  }
  auto peer = socket_address::peer_of(fd);
  if (!peer) {
    return peer.error();  // ENOTCONN: never connected, or a connect still in progress
  }
  // A connect that failed leaves a socket with no peer for getpeername but a pending error;
  // one that is still in progress is ENOTCONN above on Linux. Take a pending error as fatal.
  int soerr = 0;
  len = sizeof soerr;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr != 0) {
    return std::error_code(soerr, std::system_category());
  }
  return std::pair<transport, socket_address>{kind, *peer};
}

}  // namespace

std::error_code engine::adopt(int fd, adopt_options options) {
  detail::engine_internals& in = *in_;
  if (!running() || in.stop_flag.load(std::memory_order_acquire) || in.loops.empty()) {
    return errc::stopped;
  }
  auto checked = check_adoptable(fd);
  if (!checked) {
    return checked.error();
  }
  const int flags = ::fcntl(fd, F_GETFL);
  const int fd_flags = ::fcntl(fd, F_GETFD);
  if (flags < 0 || fd_flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
      ::fcntl(fd, F_SETFD, fd_flags | FD_CLOEXEC) != 0) {
    return last_system_error();
  }
  const std::size_t n = in.loops.size();
  const std::size_t idx = options.loop >= 0 ? static_cast<std::size_t>(options.loop) % n
                                            : in.pick_loop(&checked->second);
  detail::loop_internals& li = in.loops[idx]->internals();
  auto r = std::make_shared<detail::adopt_request>();
  r->kind = checked->first;
  r->peer = checked->second;
  r->options = std::move(options);
  r->loop_count = &li.conn_count;
  r->engine_count = &in.conn_count;
  li.conn_count.fetch_add(1, std::memory_order_relaxed);
  in.conn_count.fetch_add(1, std::memory_order_relaxed);
  r->fd = fd;
  if (li.self.post([&li, r] { li.start_adopt(*r); })) {
    r->fd = -1;  // refused: the caller keeps the fd, with its flags as they were
    (void)::fcntl(fd, F_SETFL, flags);
    (void)::fcntl(fd, F_SETFD, fd_flags);
    li.conn_count.fetch_sub(1, std::memory_order_relaxed);
    in.conn_count.fetch_sub(1, std::memory_order_relaxed);
    return errc::stopped;
  }
  return {};
}

}  // namespace evnet
