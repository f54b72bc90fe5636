// echo_loadgen: the benchmark suite's echo load generator (one thread, its own epoll, libc only).
//
// It opens N connections to an echo server (TCP on 127.0.0.1 or a Unix socket), keeps `depth`
// messages of `size` bytes in flight on each (depth 1 = ping-pong), verifies every echoed byte
// against a pattern that depends on the connection and the message's sequence number, and prints
// one machine-readable line:
//
//   RESULT msgs=… secs=… msgs_per_s=… mb_per_s=… p50_us=… p99_us=… p999_us=… max_us=…
//          errors=… mismatches=… client_cpu=… server_cpu_ns=… server_cpu_ns_per_msg=…
//
// With --ws it speaks WebSocket instead (RFC 6455 client: HTTP upgrade with a checked
// Sec-WebSocket-Accept, masked binary frames, unmasked replies parsed and verified). With --idle
// it opens the connections, echoes one message on each (so the server has certainly accepted and
// served every one), prints `READY conns=N` and holds them until stdin closes, SIGTERM/SIGINT, or
// --duration passes: the tool for the memory-per-idle-connection case. It prints
// `CONNECTED conns=N` before the echoes; with --idle-wait-ping it sends them only once a line
// arrives on stdin, so the caller can measure the server with never-used connections first.
//
// The measured window starts after --warmup. When given --server-pid it reads the server's CPU
// clock (user+system, all threads, nanoseconds) exactly at the window's edges; when given
// --perf-ctl/--perf-ack fifos it enables and disables a `perf stat --control` session at the same
// edges, so the server's system calls are counted over exactly the messages reported.
//
// `echo_loadgen --print-cpu PID` only prints `CPU_NS <n>`, the CPU time a process has used.
//
// Exit status: 0 on success, 1 if any echoed byte mismatched, 2 on any other error (refused or
// reset connections, lost echoes, timeouts), 3 on bad usage.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "histogram.h"
#include "sha1.h"

namespace {

// Pattern: message s of connection c is the slice pattern[offset(c, s) .. + size). The period is
// prime and the steps are coprime to it, so consecutive messages (and neighbouring connections)
// start at different offsets: a dropped, duplicated, reordered or cross-wired message mismatches.
constexpr uint64_t kPatternPeriod = 4093;

uint64_t pattern_offset(uint32_t conn, uint64_t seq) {
  return (uint64_t{conn} * 131 + seq * 37) % kPatternPeriod;
}

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

uint64_t cpu_clock_ns(clockid_t clk) {
  timespec ts;
  if (clock_gettime(clk, &ts) != 0) return 0;
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

volatile sig_atomic_t g_stop = 0;
void on_signal(int) {
  g_stop = 1;
}

struct options {
  std::string host = "127.0.0.1";
  int port = -1;
  std::string unix_path;
  int conns = 50;
  size_t size = 64;
  int depth = 1;
  double duration = 2.0;
  double warmup = 0.2;
  uint64_t messages = 0;  // 0 = bounded by duration only
  bool ws = false;
  std::string ws_path = "/";
  bool idle = false;
  bool idle_wait_ping = false;
  int server_pid = 0;
  std::string perf_ctl, perf_ack;
  double connect_timeout = 10.0;
  double drain_timeout = 2.0;
  double max_time = 300.0;
  int max_connecting = 256;
  bool quiet = false;
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(
      stderr,
      "echo_loadgen: %s\n"
      "usage: echo_loadgen (--port P [--host 127.0.0.1] | --unix PATH)\n"
      "  [--conns N=50] [--size BYTES=64] [--depth D=1] [--duration S=2]\n"
      "  [--warmup S=0.2] [--messages M] [--ws [--ws-path /]] [--idle [--idle-wait-ping]]\n"
      "  [--server-pid PID] [--perf-ctl FIFO --perf-ack FIFO]\n"
      "  [--connect-timeout S=10] [--drain-timeout S=2] [--max-time S=300] [--quiet]\n",
      msg);
  std::exit(3);
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto val = [&]() -> const char* {
      if (i + 1 >= argc) usage("missing value");
      return argv[++i];
    };
    if (a == "--host")
      o.host = val();
    else if (a == "--port")
      o.port = std::atoi(val());
    else if (a == "--unix")
      o.unix_path = val();
    else if (a == "--conns")
      o.conns = std::atoi(val());
    else if (a == "--size")
      o.size = std::strtoull(val(), nullptr, 10);
    else if (a == "--depth")
      o.depth = std::atoi(val());
    else if (a == "--duration")
      o.duration = std::atof(val());
    else if (a == "--warmup")
      o.warmup = std::atof(val());
    else if (a == "--messages")
      o.messages = std::strtoull(val(), nullptr, 10);
    else if (a == "--ws")
      o.ws = true;
    else if (a == "--ws-path")
      o.ws_path = val();
    else if (a == "--idle")
      o.idle = true;
    else if (a == "--idle-wait-ping")
      o.idle = o.idle_wait_ping = true;
    else if (a == "--server-pid")
      o.server_pid = std::atoi(val());
    else if (a == "--perf-ctl")
      o.perf_ctl = val();
    else if (a == "--perf-ack")
      o.perf_ack = val();
    else if (a == "--connect-timeout")
      o.connect_timeout = std::atof(val());
    else if (a == "--drain-timeout")
      o.drain_timeout = std::atof(val());
    else if (a == "--max-time")
      o.max_time = std::atof(val());
    else if (a == "--quiet")
      o.quiet = true;
    else
      usage(("unknown option " + std::string(a)).c_str());
  }
  if (o.port < 0 && o.unix_path.empty()) usage("need --port or --unix");
  if (o.conns < 1 || o.depth < 1 || o.size < 1) usage("conns, depth and size must be >= 1");
  if (o.size > (size_t{64} << 20)) usage("size above 64 MiB");
  if (o.duration <= 0 && o.messages == 0 && !o.idle) usage("need --duration or --messages");
  return o;
}

enum class conn_state { connecting, handshaking, ready, closed };

struct conn {
  int fd = -1;
  uint32_t id = 0;
  conn_state state = conn_state::connecting;
  uint64_t tx_seq = 0;  // next message to issue
  uint64_t rx_seq = 0;  // next message expected back
  size_t rx_off = 0;    // bytes of message rx_seq verified so far
  std::vector<uint8_t> tx;
  size_t tx_pos = 0;
  bool want_out = false;
  std::vector<uint64_t> sent_at;  // ring, indexed by seq % depth
  // WebSocket receive state.
  uint8_t hdr[14];
  size_t hdr_len = 0;
  size_t hdr_need = 2;
  uint64_t frame_left = 0;  // payload bytes left in the current frame
  bool frame_is_data = false;
  bool frame_fin = false;
  std::string handshake;  // response bytes until the blank line
  std::string ws_key;
  uint32_t mask_state = 0;
};

class load_generator {
 public:
  explicit load_generator(const options& o) : o_(o) {
    pattern_.resize(kPatternPeriod + o.size);
    uint32_t x = 0x9e3779b9u;
    for (auto& b : pattern_) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      b = static_cast<uint8_t>(x >> 11);
    }
    rbuf_.resize(256 * 1024);
  }

  int run();

 private:
  bool open_perf_fifos();
  bool perf_command(const char* cmd);
  bool start_connect(conn& c);
  void on_event(conn& c, uint32_t ev);
  void on_connected(conn& c);
  void on_handshake_bytes(conn& c, const uint8_t* p, size_t n);
  void on_echo_bytes(conn& c, const uint8_t* p, size_t n);
  void on_ws_bytes(conn& c, const uint8_t* p, size_t n);
  void verify_payload(conn& c, const uint8_t* p, size_t n);
  void message_done(conn& c);
  void issue(conn& c, uint64_t k);
  void flush(conn& c);
  void fail(conn& c, const char* what, int err);
  void set_out(conn& c, bool on);
  void begin_window();
  void end_window();
  bool all_drained() const;

  const options& o_;
  std::vector<uint8_t> pattern_;
  std::vector<uint8_t> rbuf_;
  std::vector<conn> conns_;
  int ep_ = -1;
  int perf_ctl_fd_ = -1, perf_ack_fd_ = -1;
  clockid_t server_clk_{};
  bool have_server_clk_ = false;

  enum class phase { connecting, warmup, measure, drain, idle_wait, idle_ping, idle_hold, done };
  phase phase_ = phase::connecting;
  int connecting_ = 0;  // connects in flight
  int next_to_connect_ = 0;
  int ready_ = 0;
  int closed_ = 0;
  uint64_t now_ = 0;
  uint64_t window_start_ = 0, window_end_ = 0;
  uint64_t window_msgs_ = 0;
  uint64_t total_msgs_ = 0;
  uint64_t server_cpu0_ = 0, server_cpu1_ = 0;
  uint64_t client_cpu0_ = 0, client_cpu1_ = 0;
  uint64_t errors_ = 0;
  uint64_t mismatches_ = 0;
  bool perf_ok_ = true;
  bench::log_linear_histogram hist_;
};

bool load_generator::open_perf_fifos() {
  const uint64_t deadline = now_ns() + 10'000'000'000ull;
  for (;;) {
    perf_ctl_fd_ = ::open(o_.perf_ctl.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (perf_ctl_fd_ >= 0) break;
    if (errno != ENXIO || now_ns() > deadline) {
      std::fprintf(stderr, "echo_loadgen: cannot open %s: %s\n", o_.perf_ctl.c_str(),
                   std::strerror(errno));
      return false;
    }
    usleep(10'000);  // perf has not opened its end yet
  }
  perf_ack_fd_ = ::open(o_.perf_ack.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (perf_ack_fd_ < 0) {
    std::fprintf(stderr, "echo_loadgen: cannot open %s: %s\n", o_.perf_ack.c_str(),
                 std::strerror(errno));
    return false;
  }
  return true;
}

// Sends one `perf stat --control` command and waits for perf's acknowledgement, so that the
// counters are really on (or off) when this returns.
bool load_generator::perf_command(const char* cmd) {
  if (perf_ctl_fd_ < 0) return true;
  const size_t len = std::strlen(cmd);
  if (::write(perf_ctl_fd_, cmd, len) != static_cast<ssize_t>(len)) return perf_ok_ = false;
  pollfd pfd{perf_ack_fd_, POLLIN, 0};
  if (::poll(&pfd, 1, 5000) != 1) return perf_ok_ = false;
  char buf[16];
  const ssize_t n = ::read(perf_ack_fd_, buf, sizeof buf);
  if (n < 3 || std::memcmp(buf, "ack", 3) != 0) return perf_ok_ = false;
  return true;
}

bool load_generator::start_connect(conn& c) {
  const bool is_unix = !o_.unix_path.empty();
  c.fd = ::socket(is_unix ? AF_UNIX : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c.fd < 0) {
    fail(c, "socket", errno);
    return true;
  }
  ++connecting_;  // from here on fail() undoes this
  int rc;
  if (is_unix) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", o_.unix_path.c_str());
    rc = ::connect(c.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  } else {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(o_.port));
    if (inet_pton(AF_INET, o_.host.c_str(), &sa.sin_addr) != 1) usage("--host must be IPv4");
    rc = ::connect(c.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  }
  if (rc != 0 && errno == EAGAIN && is_unix) {
    // The Unix listener's backlog is full: try again on a later round.
    ::close(c.fd);
    c.fd = -1;
    --connecting_;
    return false;
  }
  if (rc != 0 && errno != EINPROGRESS) {
    fail(c, "connect", errno);
    return true;
  }
  epoll_event ev{};
  ev.events = EPOLLOUT;
  ev.data.u32 = c.id;
  if (::epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev) != 0) fail(c, "epoll_ctl", errno);
  return true;
}

void load_generator::set_out(conn& c, bool on) {
  if (c.want_out == on) return;
  c.want_out = on;
  epoll_event ev{};
  ev.events = EPOLLIN | (on ? EPOLLOUT : 0u);
  ev.data.u32 = c.id;
  if (::epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev) != 0) fail(c, "epoll_ctl", errno);
}

void load_generator::fail(conn& c, const char* what, int err) {
  if (c.state == conn_state::closed) return;
  if (errors_ < 5) {
    std::fprintf(stderr, "echo_loadgen: conn %u: %s%s%s\n", c.id, what, err ? ": " : "",
                 err ? std::strerror(err) : "");
  }
  ++errors_;
  if (c.state == conn_state::connecting && c.fd >= 0) --connecting_;
  if (c.state == conn_state::ready) --ready_;
  if (c.fd >= 0) ::close(c.fd);
  c.fd = -1;
  c.state = conn_state::closed;
  ++closed_;
}

void load_generator::on_connected(conn& c) {
  --connecting_;
  c.state = o_.ws ? conn_state::handshaking : conn_state::ready;
  if (!o_.ws) ++ready_;
  if (o_.unix_path.empty()) {
    int one = 1;
    ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  c.want_out = true;  // force the MOD below
  set_out(c, false);
  if (c.state == conn_state::closed) return;
  if (o_.ws) {
    uint8_t raw[16];
    uint32_t x = 0x2545F491u ^ (c.id * 2654435761u);
    for (auto& b : raw) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      b = static_cast<uint8_t>(x);
    }
    c.ws_key = bench::base64(raw, sizeof raw);
    c.mask_state = x | 1u;
    std::string req = "GET " + o_.ws_path + " HTTP/1.1\r\nHost: " + o_.host + ":" +
                      std::to_string(o_.port) +
                      "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: " +
                      c.ws_key + "\r\nSec-WebSocket-Version: 13\r\n\r\n";
    c.tx.assign(req.begin(), req.end());
    c.tx_pos = 0;
    flush(c);
  }
}

void load_generator::on_handshake_bytes(conn& c, const uint8_t* p, size_t n) {
  c.handshake.append(reinterpret_cast<const char*>(p), n);
  const size_t end = c.handshake.find("\r\n\r\n");
  if (end == std::string::npos) {
    if (c.handshake.size() > 16384) fail(c, "handshake response too long", 0);
    return;
  }
  std::string head = c.handshake.substr(0, end + 2);
  std::string rest = c.handshake.substr(end + 4);
  if (head.compare(0, 12, "HTTP/1.1 101") != 0) {
    fail(c, ("handshake refused: " + head.substr(0, head.find('\r'))).c_str(), 0);
    return;
  }
  std::string lower = head;
  for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  const size_t h = lower.find("\r\nsec-websocket-accept:");
  if (h == std::string::npos) {
    fail(c, "handshake without Sec-WebSocket-Accept", 0);
    return;
  }
  size_t v = h + 23;
  while (v < head.size() && head[v] == ' ') ++v;
  std::string accept = head.substr(v, head.find("\r\n", v) - v);
  while (!accept.empty() && accept.back() == ' ') accept.pop_back();
  if (accept != bench::websocket_accept(c.ws_key)) {
    fail(c, "wrong Sec-WebSocket-Accept", 0);
    return;
  }
  if (lower.find("\r\nsec-websocket-extensions:") != std::string::npos) {
    fail(c, "server negotiated an extension we did not offer", 0);
    return;
  }
  c.handshake.clear();
  c.handshake.shrink_to_fit();
  c.state = conn_state::ready;
  ++ready_;
  if (!rest.empty()) on_ws_bytes(c, reinterpret_cast<const uint8_t*>(rest.data()), rest.size());
}

void load_generator::issue(conn& c, uint64_t k) {
  if (c.tx_pos == c.tx.size()) {
    c.tx.clear();
    c.tx_pos = 0;
  }
  const size_t size = o_.size;
  for (uint64_t i = 0; i < k; ++i) {
    const uint64_t seq = c.tx_seq++;
    c.sent_at[seq % static_cast<uint64_t>(o_.depth)] = now_;
    const uint8_t* src = pattern_.data() + pattern_offset(c.id, seq);
    if (!o_.ws) {
      c.tx.insert(c.tx.end(), src, src + size);
      continue;
    }
    uint8_t hdr[14];
    size_t hl = 0;
    hdr[hl++] = 0x82;  // FIN + binary
    if (size < 126) {
      hdr[hl++] = static_cast<uint8_t>(0x80 | size);
    } else if (size < 65536) {
      hdr[hl++] = 0x80 | 126;
      hdr[hl++] = static_cast<uint8_t>(size >> 8);
      hdr[hl++] = static_cast<uint8_t>(size);
    } else {
      hdr[hl++] = 0x80 | 127;
      for (int b = 7; b >= 0; --b) hdr[hl++] = static_cast<uint8_t>(uint64_t{size} >> (b * 8));
    }
    // A fresh masking key per frame, as RFC 6455 section 5.3 requires of clients.
    uint32_t x = c.mask_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c.mask_state = x;
    uint8_t key[4];
    std::memcpy(key, &x, 4);
    std::memcpy(hdr + hl, key, 4);
    hl += 4;
    c.tx.insert(c.tx.end(), hdr, hdr + hl);
    const size_t base = c.tx.size();
    c.tx.insert(c.tx.end(), src, src + size);
    uint8_t* dst = c.tx.data() + base;
    uint64_t key8;
    std::memcpy(&key8, key, 4);
    std::memcpy(reinterpret_cast<uint8_t*>(&key8) + 4, key, 4);
    size_t j = 0;
    for (; j + 8 <= size; j += 8) {
      uint64_t w;
      std::memcpy(&w, dst + j, 8);
      w ^= key8;
      std::memcpy(dst + j, &w, 8);
    }
    for (; j < size; ++j) dst[j] ^= key[j & 3];
  }
}

void load_generator::flush(conn& c) {
  while (c.tx_pos < c.tx.size()) {
    const ssize_t n = ::send(c.fd, c.tx.data() + c.tx_pos, c.tx.size() - c.tx_pos, MSG_NOSIGNAL);
    if (n > 0) {
      c.tx_pos += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      set_out(c, true);
      return;
    }
    fail(c, "write", n < 0 ? errno : 0);
    return;
  }
  c.tx.clear();
  c.tx_pos = 0;
  set_out(c, false);
}

void load_generator::message_done(conn& c) {
  const uint64_t lat = now_ - c.sent_at[c.rx_seq % static_cast<uint64_t>(o_.depth)];
  ++c.rx_seq;
  c.rx_off = 0;
  ++total_msgs_;
  if (phase_ == phase::measure) {
    ++window_msgs_;
    hist_.record(lat);
  }
}

// Checks n payload bytes against the expected stream; false (and the connection failed) on a
// mismatch or on bytes nobody asked for.
void load_generator::verify_payload(conn& c, const uint8_t* p, size_t n) {
  const uint8_t* want = pattern_.data() + pattern_offset(c.id, c.rx_seq) + c.rx_off;
  if (std::memcmp(p, want, n) == 0) return;
  size_t i = 0;
  while (p[i] == want[i]) ++i;
  ++mismatches_;
  if (mismatches_ <= 5) {
    std::fprintf(stderr,
                 "echo_loadgen: MISMATCH conn %u message %" PRIu64
                 " byte %zu: expected 0x%02x, "
                 "got 0x%02x\n",
                 c.id, c.rx_seq, c.rx_off + i, want[i], p[i]);
  }
  fail(c, "echoed bytes differ from what was sent", 0);
}

void load_generator::on_echo_bytes(conn& c, const uint8_t* p, size_t n) {
  uint64_t done = 0;
  while (n > 0) {
    if (c.rx_seq >= c.tx_seq) {
      fail(c, "server sent more bytes than were sent to it", 0);
      return;
    }
    const size_t m = std::min(n, o_.size - c.rx_off);
    verify_payload(c, p, m);
    if (c.state == conn_state::closed) return;
    p += m;
    n -= m;
    c.rx_off += m;
    if (c.rx_off == o_.size) {
      message_done(c);
      ++done;
    }
  }
  if (done > 0 && (phase_ == phase::warmup || phase_ == phase::measure)) {
    issue(c, done);
    flush(c);
  }
}

void load_generator::on_ws_bytes(conn& c, const uint8_t* p, size_t n) {
  uint64_t done = 0;
  while (n > 0) {
    if (c.frame_left == 0 && c.hdr_need > 0) {
      const size_t m = std::min(n, c.hdr_need - c.hdr_len);
      std::memcpy(c.hdr + c.hdr_len, p, m);
      c.hdr_len += m;
      p += m;
      n -= m;
      if (c.hdr_len < c.hdr_need) continue;
      if (c.hdr_need == 2) {
        if (c.hdr[1] & 0x80) return fail(c, "server frame is masked (RFC 6455 5.1)", 0);
        const unsigned len7 = c.hdr[1] & 0x7f;
        c.hdr_need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
        if (c.hdr_len < c.hdr_need) continue;
      }
      const unsigned len7 = c.hdr[1] & 0x7f;
      uint64_t len = len7;
      if (len7 == 126) len = (uint64_t{c.hdr[2]} << 8) | c.hdr[3];
      if (len7 == 127) {
        len = 0;
        for (int b = 0; b < 8; ++b) len = (len << 8) | c.hdr[2 + b];
      }
      const unsigned opcode = c.hdr[0] & 0x0f;
      if (c.hdr[0] & 0x70) return fail(c, "RSV bits set without a negotiated extension", 0);
      if (opcode == 0x8) return fail(c, "server sent a close frame", 0);
      if (opcode == 0x1) return fail(c, "server answered a binary message with text", 0);
      c.frame_is_data = (opcode == 0x0 || opcode == 0x2);
      if (!c.frame_is_data && opcode != 0x9 && opcode != 0xA) {
        return fail(c, "unknown opcode", 0);
      }
      c.frame_fin = (c.hdr[0] & 0x80) != 0;
      c.frame_left = len;
      c.hdr_len = 0;
      c.hdr_need = len == 0 ? 2 : 0;
      if (len == 0 && c.frame_is_data && c.frame_fin && c.rx_off != 0) {
        return fail(c, "message ended early", 0);
      }
      continue;
    }
    const size_t m = static_cast<size_t>(std::min<uint64_t>(n, c.frame_left));
    if (c.frame_is_data) {
      if (c.rx_seq >= c.tx_seq) return fail(c, "server sent a message nobody asked for", 0);
      if (m > o_.size - c.rx_off) return fail(c, "frame longer than the message sent", 0);
      verify_payload(c, p, m);
      if (c.state == conn_state::closed) return;
      c.rx_off += m;
    }
    p += m;
    n -= m;
    c.frame_left -= m;
    if (c.frame_left == 0) {
      c.hdr_need = 2;
      if (c.frame_is_data && c.frame_fin) {
        if (c.rx_off != o_.size) return fail(c, "message ended early", 0);
        message_done(c);
        ++done;
      } else if (c.frame_is_data && c.rx_off == o_.size) {
        return fail(c, "message longer than the one sent", 0);
      }
    }
  }
  if (done > 0 && (phase_ == phase::warmup || phase_ == phase::measure)) {
    issue(c, done);
    flush(c);
  }
}

void load_generator::on_event(conn& c, uint32_t ev) {
  if (c.state == conn_state::closed) return;
  if (c.state == conn_state::connecting) {
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return fail(c, "connect", err);
    if (ev & (EPOLLERR | EPOLLHUP)) return fail(c, "connect", ECONNREFUSED);
    return on_connected(c);
  }
  if ((ev & EPOLLOUT) && c.want_out) {
    flush(c);
    if (c.state == conn_state::closed) return;
  }
  if (!(ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
  // Level-triggered: one read per readiness report. Whatever is left makes the next epoll_wait
  // report the socket again, which costs less than a read that ends in EAGAIN.
  const ssize_t n = ::read(c.fd, rbuf_.data(), rbuf_.size());
  if (n > 0) {
    now_ = now_ns();
    if (c.state == conn_state::handshaking) return on_handshake_bytes(c, rbuf_.data(), size_t(n));
    if (o_.ws) return on_ws_bytes(c, rbuf_.data(), size_t(n));
    return on_echo_bytes(c, rbuf_.data(), size_t(n));
  }
  if (n == 0) return fail(c, "server closed the connection", 0);
  if (errno == EAGAIN || errno == EINTR) return;
  fail(c, "read", errno);
}

void load_generator::begin_window() {
  perf_command("enable\n");
  if (have_server_clk_) server_cpu0_ = cpu_clock_ns(server_clk_);
  client_cpu0_ = cpu_clock_ns(CLOCK_PROCESS_CPUTIME_ID);
  window_start_ = now_ns();
  window_msgs_ = 0;
  hist_.reset();
  phase_ = phase::measure;
}

void load_generator::end_window() {
  window_end_ = now_ns();
  client_cpu1_ = cpu_clock_ns(CLOCK_PROCESS_CPUTIME_ID);
  if (have_server_clk_) server_cpu1_ = cpu_clock_ns(server_clk_);
  perf_command("disable\n");
  phase_ = phase::drain;
}

bool load_generator::all_drained() const {
  for (const auto& c : conns_) {
    if (c.state != conn_state::closed && (c.rx_seq != c.tx_seq || c.tx_pos < c.tx.size())) {
      return false;
    }
  }
  return true;
}

int load_generator::run() {
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (o_.server_pid > 0) {
    have_server_clk_ =
        clock_getcpuclockid(o_.server_pid, &server_clk_) == 0 && cpu_clock_ns(server_clk_) > 0;
    if (!have_server_clk_) std::fprintf(stderr, "echo_loadgen: no CPU clock for the server\n");
  }
  if (!o_.perf_ctl.empty() && !open_perf_fifos()) return 2;
  ep_ = epoll_create1(EPOLL_CLOEXEC);
  if (ep_ < 0) return 2;
  bool stdin_watched = false;
  if (o_.idle) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = UINT32_MAX;
    stdin_watched = epoll_ctl(ep_, EPOLL_CTL_ADD, 0, &ev) == 0;
  }
  conns_.resize(static_cast<size_t>(o_.conns));
  for (size_t i = 0; i < conns_.size(); ++i) {
    conns_[i].id = static_cast<uint32_t>(i);
    conns_[i].sent_at.resize(static_cast<size_t>(o_.depth));
  }
  const uint64_t t0 = now_ns();
  const uint64_t hard_deadline = t0 + static_cast<uint64_t>(o_.max_time * 1e9);
  const uint64_t connect_deadline = t0 + static_cast<uint64_t>(o_.connect_timeout * 1e9);
  uint64_t phase_deadline = connect_deadline;
  bool timed_out = false;
  bool ping_requested = false;
  bool stdin_eof = false;
  std::vector<epoll_event> evs(1024);

  while (phase_ != phase::done) {
    while (phase_ == phase::connecting && next_to_connect_ < o_.conns &&
           connecting_ < o_.max_connecting) {
      if (!start_connect(conns_[static_cast<size_t>(next_to_connect_)])) break;
      ++next_to_connect_;
    }
    now_ = now_ns();
    int timeout_ms = 100;
    if (phase_deadline > now_) {
      timeout_ms = static_cast<int>(std::min<uint64_t>(100, (phase_deadline - now_) / 1000000 + 1));
    } else {
      timeout_ms = 0;
    }
    if (phase_ == phase::connecting && next_to_connect_ < o_.conns)
      timeout_ms = std::min(timeout_ms, 1);
    const int n = epoll_wait(ep_, evs.data(), static_cast<int>(evs.size()), timeout_ms);
    if (n < 0 && errno != EINTR) {
      std::perror("epoll_wait");
      return 2;
    }
    for (int i = 0; i < n; ++i) {
      const uint32_t id = evs[static_cast<size_t>(i)].data.u32;
      if (id == UINT32_MAX) {
        char buf[256];
        const ssize_t r = ::read(0, buf, sizeof buf);
        if (r <= 0) {
          epoll_ctl(ep_, EPOLL_CTL_DEL, 0, nullptr);
          stdin_watched = false;
          stdin_eof = true;
        } else {
          ping_requested = true;  // a line may arrive before the connections are up
        }
        continue;
      }
      on_event(conns_[id], evs[static_cast<size_t>(i)].events);
    }
    now_ = now_ns();
    const bool holding = phase_ == phase::idle_hold || phase_ == phase::idle_wait;
    if (now_ > hard_deadline && !holding) {
      std::fprintf(stderr, "echo_loadgen: --max-time reached\n");
      timed_out = true;
      if (phase_ == phase::measure) end_window();
      break;
    }
    if (g_stop) {
      if (phase_ == phase::measure) end_window();
      if (!holding && phase_ != phase::drain) timed_out = true;
      break;
    }
    switch (phase_) {
      case phase::connecting:
        if (ready_ + closed_ == o_.conns) {
          if (closed_ > 0) {
            phase_ = phase::done;
            break;
          }
          if (o_.idle) {
            std::printf("CONNECTED conns=%d\n", ready_);
            std::fflush(stdout);
            phase_ = phase::idle_wait;
            break;
          }
          phase_ = phase::warmup;
          phase_deadline = now_ + static_cast<uint64_t>(o_.warmup * 1e9);
          for (auto& c : conns_) {
            issue(c, static_cast<uint64_t>(o_.depth));
            flush(c);
          }
          if (o_.warmup <= 0) begin_window();
        } else if (now_ > connect_deadline) {
          std::fprintf(stderr, "echo_loadgen: only %d of %d connections ready after %.1f s\n",
                       ready_, o_.conns, o_.connect_timeout);
          timed_out = true;
          phase_ = phase::done;
        }
        break;
      case phase::warmup:
        if (now_ >= phase_deadline) begin_window();
        break;
      case phase::measure: {
        const bool by_time =
            o_.duration > 0 && now_ >= window_start_ + static_cast<uint64_t>(o_.duration * 1e9);
        const bool by_count = o_.messages > 0 && window_msgs_ >= o_.messages;
        if (by_time || by_count || ready_ == 0) {
          end_window();
          phase_deadline = now_ + static_cast<uint64_t>(o_.drain_timeout * 1e9);
        }
        break;
      }
      case phase::drain:
        if (all_drained()) {
          phase_ = phase::done;
        } else if (now_ >= phase_deadline) {
          for (auto& c : conns_) {
            if (c.state != conn_state::closed && c.rx_seq != c.tx_seq) {
              fail(c, "echo not received before the drain timeout", 0);
            }
          }
          phase_ = phase::done;
        }
        break;
      case phase::idle_wait:
        if (stdin_eof && !ping_requested && o_.idle_wait_ping) {
          phase_ = phase::done;  // the caller went away without asking for the echoes
        } else if (ping_requested || !o_.idle_wait_ping) {
          phase_ = phase::idle_ping;
          for (auto& c : conns_) {
            issue(c, 1);
            flush(c);
          }
          phase_deadline = now_ + static_cast<uint64_t>(o_.connect_timeout * 1e9);
        }
        break;
      case phase::idle_ping:
        if (all_drained()) {
          std::printf("READY conns=%d\n", ready_);
          std::fflush(stdout);
          phase_ = phase::idle_hold;
          phase_deadline =
              o_.duration > 0 ? now_ + static_cast<uint64_t>(o_.duration * 1e9) : UINT64_MAX;
        } else if (now_ >= phase_deadline) {
          std::fprintf(stderr, "echo_loadgen: idle pings unanswered\n");
          timed_out = true;
          phase_ = phase::done;
        }
        break;
      case phase::idle_hold:
        if (now_ >= phase_deadline || stdin_eof) phase_ = phase::done;
        break;
      case phase::done:
        break;
    }
  }
  (void)stdin_watched;
  for (auto& c : conns_) {
    if (c.fd >= 0) ::close(c.fd);
    c.fd = -1;
  }
  if (o_.idle) {
    std::printf("RESULT mode=idle conns=%d errors=%" PRIu64 "\n", ready_,
                errors_ + (timed_out ? 1 : 0));
  } else {
    const double secs = window_end_ > window_start_ ? double(window_end_ - window_start_) / 1e9 : 0;
    const double rate = secs > 0 ? double(window_msgs_) / secs : 0;
    const double client_cpu = secs > 0 ? double(client_cpu1_ - client_cpu0_) / 1e9 / secs : 0;
    const uint64_t server_cpu = server_cpu1_ - server_cpu0_;
    std::printf("RESULT mode=%s conns=%d size=%zu depth=%d msgs=%" PRIu64 " total_msgs=%" PRIu64
                " secs=%.4f msgs_per_s=%.1f mb_per_s=%.3f p50_us=%.1f p99_us=%.1f p999_us=%.1f "
                "max_us=%.1f errors=%" PRIu64 " mismatches=%" PRIu64
                " client_cpu=%.3f server_cpu_ns=%" PRIu64 " server_cpu_ns_per_msg=%.1f perf=%s\n",
                o_.ws ? "ws" : "echo", o_.conns, o_.size, o_.depth, window_msgs_, total_msgs_, secs,
                rate, rate * double(o_.size) / 1e6, double(hist_.value_at(0.5)) / 1e3,
                double(hist_.value_at(0.99)) / 1e3, double(hist_.value_at(0.999)) / 1e3,
                double(hist_.max()) / 1e3, errors_ + (timed_out ? 1 : 0), mismatches_, client_cpu,
                have_server_clk_ ? server_cpu : 0,
                have_server_clk_ && window_msgs_ ? double(server_cpu) / double(window_msgs_) : 0.0,
                perf_ctl_fd_ < 0 ? "off"
                : perf_ok_       ? "ok"
                                 : "failed");
  }
  std::fflush(stdout);
  if (mismatches_ > 0) return 1;
  if (errors_ > 0 || timed_out || !perf_ok_) return 2;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // `--print-cpu PID`: print the process's CPU time (user+system, all threads) in nanoseconds and
  // exit. scripts/bench uses it around wrk runs, where /proc's 10 ms ticks would be too coarse.
  if (argc == 3 && std::string_view(argv[1]) == "--print-cpu") {
    clockid_t clk;
    const int pid = std::atoi(argv[2]);
    if (pid <= 0 || clock_getcpuclockid(pid, &clk) != 0) return 2;
    std::printf("CPU_NS %" PRIu64 "\n", cpu_clock_ns(clk));
    return 0;
  }
  const options o = parse(argc, argv);
  load_generator g(o);
  return g.run();
}
