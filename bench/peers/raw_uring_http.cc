// raw_uring_http: raw_epoll_http's responder on a completion-based io_uring loop, by hand (raw
// system calls, no liburing). It is a reference point, not a contender: it shows how low the
// CPU per request gets on this machine with a design that has almost no event-loop system calls
// left, i.e. about as low as any server's (evnet's http_server, nginx) can be expected to get.
//
// Its answers are raw_epoll_http's, byte for byte: `GET /plaintext` answers 200 with the 13-byte
// body `Hello, World!`, Content-Type and a Date header (formatted once per second); any other
// request line answers 404; no request bodies, no chunked encoding. The loop:
// - one multishot accept; each connection goes into the ring's registered file table, so its
//   operations (IOSQE_FIXED_FILE) skip the per-operation file lookup;
// - one multishot receive per connection into a ring of 128 provided 1 KiB buffers (small
//   buffers keep the working set in cache; a longer request is carried over, as in the epoll
//   peer);
// - the responses to every request a round received go out in one send per connection, all
//   submitted by the same io_uring_enter that waits for the next round (DEFER_TASKRUN, the ring
//   fd registered, no SQ index array where the kernel allows it);
// - that wait asks for one completion more than the sends, cancels and closes just submitted
//   will post themselves: most sends complete inline during the submission, and waiting for
//   just one completion would end the wait on them and cost a round of its own. Each of those
//   operations posts exactly one completion whatever happens, so the count cannot stall the
//   loop; the wait is bounded by one second anyway (as raw_epoll_http's), so even a miscount
//   could only delay a round, never hang the server.
// Measured against raw_epoll_http with wrk (non-pipelined, 100 connections) it took 0.93-0.95×
// its CPU per request with ~0.2 system calls per request instead of ~2.1: the TCP/loopback work
// in the kernel, 71-78% of the server's CPU for either design (perf), is what remains.
//
// The C++ buffer-ring header trap: Debian 12's linux-libc-dev (6.1) declares
// io_uring_buf_ring's `bufs` with __DECLARE_FLEX_ARRAY, which puts an empty struct member
// (`__empty_bufs`) before the array. In C that member has size 0; in C++ it has size 1, so in
// C++ `bufs` sits at offset 8 instead of 0: every entry written through it lands half an entry
// away from where the kernel reads it, and the first one's address overwrites the ring's tail.
// This file never touches io_uring_buf_ring's members: it treats the ring as the kernel lays it
// out — an array of io_uring_buf from offset 0, with the ring's 16-bit tail overlaid on the
// first entry's `resv` field (offset 14) — and checks those offsets at compile time.
//
// Where the kernel refuses the ring (io_uring_setup fails: ENOSYS without io_uring, EPERM with
// kernel.io_uring_disabled or a seccomp filter, EINVAL on a kernel too old for these features,
// which need Linux 6.1), it prints "raw_uring_http: io_uring unavailable: <what>: <reason>" and
// exits with status 3, which scripts/bench shows as a skipped row with that reason.
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "peer_common.h"
#include "raw_http_answers.h"

// Linux 6.6; Debian 12's headers (6.1) do not define it. An older kernel refuses it with EINVAL
// and the ring is set up again with the index array.
#ifndef IORING_SETUP_NO_SQARRAY
#define IORING_SETUP_NO_SQARRAY (1U << 16)
#endif

namespace {

constexpr unsigned kSqEntries = 1024;
constexpr unsigned kCqEntries = 8192;
constexpr unsigned kBufCount = 128;  // provided buffers (a power of two)
constexpr unsigned kBufSize = 1024;
constexpr size_t kMaxRequest = 8 * 1024;
constexpr unsigned kMaxFixedFiles = 65536;
constexpr int kExitUnavailable = 3;  // the kernel refused io_uring (see the header comment)

// The buffer ring's layout, as the kernel reads it (see the header comment).
static_assert(sizeof(io_uring_buf) == 16 && offsetof(io_uring_buf, resv) == 14);

// ---- the ring
int g_ring_fd = -1;
int g_enter_fd = -1;  // the registered index with IORING_ENTER_REGISTERED_RING, else g_ring_fd
unsigned g_enter_flags = 0;
unsigned* g_sq_head;
unsigned* g_sq_tail;
unsigned g_sq_mask;
unsigned g_sq_entries;
io_uring_sqe* g_sqes;
unsigned g_sq_local = 0;  // our tail, published by enter()
unsigned* g_cq_head;
unsigned* g_cq_tail;
unsigned g_cq_mask;
io_uring_cqe* g_cqes;
unsigned g_expect = 0;  // completions the SQEs queued since the last enter will post

io_uring_buf* g_br;  // the provided-buffer ring, kBufCount entries
uint16_t* g_br_tail_shared;
uint16_t g_br_tail = 0;  // ours, published before each enter
char* g_bufs;

std::vector<int> g_free_slots;  // free entries of the registered file table
int g_lfd = -1;
int g_signal_fd = -1;  // SIGINT and SIGTERM, watched by a poll in the ring
bool g_stop = false;

int sys_setup(unsigned entries, io_uring_params* p) {
  return static_cast<int>(syscall(__NR_io_uring_setup, entries, p));
}

int sys_enter(int fd, unsigned submit, unsigned min, unsigned flags, const void* arg, size_t sz) {
  return static_cast<int>(syscall(__NR_io_uring_enter, fd, submit, min, flags, arg, sz));
}

int sys_register(int fd, unsigned op, const void* arg, unsigned n) {
  return static_cast<int>(syscall(__NR_io_uring_register, fd, op, arg, n));
}

// Publishes the queued SQEs and enters. Every SQE the kernel has not consumed yet is passed for
// submission (not only those queued since the last call), so SQEs an earlier enter left behind
// (it failed with EBUSY, say) cannot sit in the queue unseen.
int enter(unsigned min, unsigned flags, const void* arg, size_t sz) {
  __atomic_store_n(g_sq_tail, g_sq_local, __ATOMIC_RELEASE);
  const unsigned submit = g_sq_local - __atomic_load_n(g_sq_head, __ATOMIC_ACQUIRE);
  g_expect = 0;
  return sys_enter(g_enter_fd, submit, min, flags | g_enter_flags, arg, sz);
}

// `posts_now`: the SQE posts exactly one completion (a send, a cancel, a close), counted into
// the next wait; multishot operations post theirs when traffic arrives and are not counted.
io_uring_sqe* get_sqe(bool posts_now) {
  if (g_sq_local - __atomic_load_n(g_sq_head, __ATOMIC_ACQUIRE) >= g_sq_entries) {
    enter(0, 0, nullptr, 0);  // full: hand the queue to the kernel without waiting
  }
  io_uring_sqe* s = &g_sqes[g_sq_local & g_sq_mask];
  std::memset(s, 0, sizeof *s);
  ++g_sq_local;
  if (posts_now) ++g_expect;
  return s;
}

[[noreturn]] void unavailable(const char* what) {
  std::fprintf(stderr, "raw_uring_http: io_uring unavailable: %s: %s\n", what,
               std::strerror(errno));
  std::exit(kExitUnavailable);
}

bool setup_ring() {
  io_uring_params p{};
  const unsigned base = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                        IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
  p.flags = base | IORING_SETUP_NO_SQARRAY;
  p.cq_entries = kCqEntries;
  g_ring_fd = sys_setup(kSqEntries, &p);
  if (g_ring_fd < 0 && errno == EINVAL) {  // before Linux 6.6: with the index array
    p = io_uring_params{};
    p.flags = base;
    p.cq_entries = kCqEntries;
    g_ring_fd = sys_setup(kSqEntries, &p);
  }
  if (g_ring_fd < 0) {
    unavailable(errno == EINVAL ? "io_uring_setup (a kernel older than 6.1?)" : "io_uring_setup");
  }
  const bool sq_array = (p.flags & IORING_SETUP_NO_SQARRAY) == 0;
  const size_t sq_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  const size_t cq_sz = p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe);
  const size_t ring_sz = sq_sz > cq_sz ? sq_sz : cq_sz;  // IORING_FEAT_SINGLE_MMAP
  auto* ring = static_cast<char*>(mmap(nullptr, ring_sz, PROT_READ | PROT_WRITE,
                                       MAP_SHARED | MAP_POPULATE, g_ring_fd, IORING_OFF_SQ_RING));
  void* sqes = mmap(nullptr, p.sq_entries * sizeof(io_uring_sqe), PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_POPULATE, g_ring_fd, IORING_OFF_SQES);
  if (ring == MAP_FAILED || sqes == MAP_FAILED) {
    std::fprintf(stderr, "raw_uring_http: mmap of the ring: %s\n", std::strerror(errno));
    return false;
  }
  g_sqes = static_cast<io_uring_sqe*>(sqes);
  g_sq_head = reinterpret_cast<unsigned*>(ring + p.sq_off.head);
  g_sq_tail = reinterpret_cast<unsigned*>(ring + p.sq_off.tail);
  g_sq_mask = *reinterpret_cast<unsigned*>(ring + p.sq_off.ring_mask);
  g_sq_entries = p.sq_entries;
  if (sq_array) {
    auto* arr = reinterpret_cast<unsigned*>(ring + p.sq_off.array);
    for (unsigned i = 0; i < p.sq_entries; ++i) arr[i] = i;
  }
  g_cq_head = reinterpret_cast<unsigned*>(ring + p.cq_off.head);
  g_cq_tail = reinterpret_cast<unsigned*>(ring + p.cq_off.tail);
  g_cq_mask = *reinterpret_cast<unsigned*>(ring + p.cq_off.ring_mask);
  g_cqes = reinterpret_cast<io_uring_cqe*>(ring + p.cq_off.cqes);

  // The registered ring fd saves the fd lookup of every io_uring_enter; optional.
  g_enter_fd = g_ring_fd;
  io_uring_rsrc_update u{};
  u.offset = static_cast<__u32>(-1);
  u.data = static_cast<__u64>(g_ring_fd);
  if (sys_register(g_ring_fd, IORING_REGISTER_RING_FDS, &u, 1) == 1) {
    g_enter_fd = static_cast<int>(u.offset);
    g_enter_flags = IORING_ENTER_REGISTERED_RING;
  }

  // The provided-buffer ring (group 0), every buffer in it.
  void* br = mmap(nullptr, kBufCount * sizeof(io_uring_buf), PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  void* bufs = mmap(nullptr, size_t{kBufCount} * kBufSize, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (br == MAP_FAILED || bufs == MAP_FAILED) {
    std::fprintf(stderr, "raw_uring_http: mmap of the buffers: %s\n", std::strerror(errno));
    return false;
  }
  g_br = static_cast<io_uring_buf*>(br);
  g_br_tail_shared = reinterpret_cast<uint16_t*>(static_cast<char*>(br) + 14);
  g_bufs = static_cast<char*>(bufs);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<__u64>(br);
  reg.ring_entries = kBufCount;
  reg.bgid = 0;
  if (sys_register(g_ring_fd, IORING_REGISTER_PBUF_RING, &reg, 1) != 0) {
    unavailable("IORING_REGISTER_PBUF_RING");
  }
  for (unsigned i = 0; i < kBufCount; ++i) {
    g_br[i].addr = reinterpret_cast<__u64>(g_bufs + size_t{i} * kBufSize);
    g_br[i].len = kBufSize;
    g_br[i].bid = static_cast<__u16>(i);
  }
  g_br_tail = static_cast<uint16_t>(kBufCount);
  __atomic_store_n(g_br_tail_shared, g_br_tail, __ATOMIC_RELEASE);

  // The file table: one slot per connection, as many as the fd limit allows (the kernel refuses
  // a table larger than RLIMIT_NOFILE).
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  const unsigned n =
      rl.rlim_cur < kMaxFixedFiles ? static_cast<unsigned>(rl.rlim_cur) : kMaxFixedFiles;
  std::vector<int> fds(n, -1);
  if (sys_register(g_ring_fd, IORING_REGISTER_FILES, fds.data(), n) != 0) {
    unavailable("IORING_REGISTER_FILES");
  }
  g_free_slots.reserve(n);
  for (unsigned i = n; i > 0; --i) g_free_slots.push_back(static_cast<int>(i - 1));
  return true;
}

// Puts buffer `bid` back in the ring; the tail is published before the next enter.
void return_buffer(unsigned bid) {
  io_uring_buf& b = g_br[g_br_tail & (kBufCount - 1)];
  b.addr = reinterpret_cast<__u64>(g_bufs + size_t{bid} * kBufSize);
  b.len = kBufSize;
  b.bid = static_cast<__u16>(bid);
  ++g_br_tail;
}

// ---- responses: raw_http_answers.h (raw_epoll_http's, byte for byte)
using raw_http::answer_requests;
using raw_http::refresh_date;

// ---- connections

// The low 3 bits of user_data say what completed; the rest is the connection's address (or, for
// kClose, the file-table slot shifted left by 3).
enum tag : uint64_t { kRecv = 0, kSend = 1, kCancel = 2, kAccept = 3, kClose = 4, kStop = 5 };

// Invariant: `out` is non-empty and no send is in flight only while the connection is on
// g_to_send (`queued`), so every response gets sent.
struct connection {
  int slot = -1;            // its entry in the registered file table
  bool recv_armed = false;  // the multishot receive has not posted its last completion yet
  bool send_busy = false;
  bool queued = false;       // on g_to_send
  bool closing = false;      // no more input: close once the output is sent
  bool failed = false;       // the output is dropped too: close as soon as the kernel lets go
  bool cancel_sent = false;  // the receive was cancelled
  size_t sent = 0;           // bytes of `out` the kernel took
  std::string out;           // being sent, or to be sent at the end of this round
  std::string next;          // responses produced while `out` is being sent
  std::string partial;       // an incomplete request carried to the next receive
};

std::vector<connection*> g_to_send;

uint64_t ud(connection* c, tag t) {
  return reinterpret_cast<uint64_t>(c) | t;
}

void arm_accept() {
  io_uring_sqe* s = get_sqe(false);
  s->opcode = IORING_OP_ACCEPT;
  s->fd = g_lfd;
  s->ioprio = IORING_ACCEPT_MULTISHOT;
  s->accept_flags = SOCK_NONBLOCK | SOCK_CLOEXEC;
  s->user_data = kAccept;
}

// The stop signals arrive as a completion: a one-shot poll on the signalfd.
void arm_stop() {
  io_uring_sqe* s = get_sqe(false);
  s->opcode = IORING_OP_POLL_ADD;
  s->fd = g_signal_fd;
  s->poll32_events = POLLIN;
  s->user_data = kStop;
}

void arm_recv(connection* c) {
  io_uring_sqe* s = get_sqe(false);
  s->opcode = IORING_OP_RECV;
  s->fd = c->slot;
  s->flags = IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
  s->ioprio = IORING_RECV_MULTISHOT;
  s->buf_group = 0;
  s->user_data = ud(c, kRecv);
  c->recv_armed = true;
}

void submit_send(connection* c) {
  io_uring_sqe* s = get_sqe(true);
  s->opcode = IORING_OP_SEND;
  s->fd = c->slot;
  s->flags = IOSQE_FIXED_FILE;
  s->addr = reinterpret_cast<__u64>(c->out.data() + c->sent);
  s->len = static_cast<__u32>(c->out.size() - c->sent);
  s->msg_flags = MSG_NOSIGNAL;
  s->user_data = ud(c, kSend);
  c->send_busy = true;
}

void want_send(connection* c) {
  if (!c->queued && !c->send_busy) {
    c->queued = true;
    g_to_send.push_back(c);
  }
}

// Closes `c` once nothing of the kernel's refers to it: the receive cancelled and finished, the
// send in flight finished, the queued output sent (unless the connection failed).
void maybe_close(connection* c) {
  c->closing = true;
  if (c->recv_armed) {
    if (!c->cancel_sent) {
      io_uring_sqe* s = get_sqe(true);
      s->opcode = IORING_OP_ASYNC_CANCEL;
      s->addr = ud(c, kRecv);
      s->user_data = kCancel;
      c->cancel_sent = true;
    }
    return;
  }
  if (c->send_busy || c->queued) return;
  io_uring_sqe* s = get_sqe(true);
  s->opcode = IORING_OP_CLOSE;
  s->file_index = static_cast<__u32>(c->slot) + 1;
  s->user_data = (static_cast<uint64_t>(c->slot) << 3) | kClose;  // the slot is free once closed
  delete c;
}

void fail(connection* c) {
  c->failed = true;
  c->next.clear();
  if (!c->send_busy) c->out.clear();  // a send in flight still reads it
  maybe_close(c);
}

void on_accept(int res, unsigned flags) {
  if (!(flags & IORING_CQE_F_MORE)) arm_accept();
  if (res < 0) return;
  int fd = res;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (g_free_slots.empty()) {
    ::close(fd);
    return;
  }
  const int slot = g_free_slots.back();
  io_uring_rsrc_update u{};
  u.offset = static_cast<__u32>(slot);
  u.data = reinterpret_cast<__u64>(&fd);
  const bool registered = sys_register(g_ring_fd, IORING_REGISTER_FILES_UPDATE, &u, 1) == 1;
  ::close(fd);  // the table holds its own reference
  if (!registered) return;
  g_free_slots.pop_back();
  auto* c = new connection{};
  c->slot = slot;
  arm_recv(c);
}

void on_recv(connection* c, int res, unsigned flags) {
  const bool more = (flags & IORING_CQE_F_MORE) != 0;
  if (!more) c->recv_armed = false;
  if (res > 0) {
    const unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
    const char* p = g_bufs + size_t{bid} * kBufSize;
    const auto n = static_cast<size_t>(res);
    if (!c->closing) {
      std::string& out = c->send_busy ? c->next : c->out;
      const size_t before = out.size();
      if (c->partial.empty()) {
        const size_t used = answer_requests(p, n, out);
        if (used < n) c->partial.assign(p + used, n - used);
      } else {
        c->partial.append(p, n);
        const size_t used = answer_requests(c->partial.data(), c->partial.size(), out);
        c->partial.erase(0, used);
      }
      if (out.size() != before) want_send(c);
    }
    return_buffer(bid);
    if (c->partial.size() > kMaxRequest) {
      fail(c);  // as raw_epoll_http: an overlong request closes the connection
    } else if (c->closing) {
      maybe_close(c);
    } else if (!more) {
      arm_recv(c);  // the kernel ended the multishot receive (it does so now and then)
    }
  } else if (res == -ENOBUFS && !c->closing) {
    if (!more) arm_recv(c);  // every buffer was in use: the returned ones are back next round
  } else if (res == 0) {
    maybe_close(c);  // end of input: the responses already due are still sent
  } else if (!more) {
    fail(c);  // an error, or our cancel
  }
}

void on_send(connection* c, int res) {
  c->send_busy = false;
  if (res < 0 || c->failed) {
    fail(c);
    return;
  }
  c->sent += static_cast<size_t>(res);
  if (c->sent < c->out.size()) {
    submit_send(c);  // the rest
    return;
  }
  c->sent = 0;
  c->out.clear();
  if (!c->next.empty()) {
    c->out.swap(c->next);
    want_send(c);  // with whatever else this round adds
  } else if (c->closing) {
    maybe_close(c);
  }
}

void run() {
  io_uring_getevents_arg arg{};  // no sigmask: the stop signals come through the ring (main())
  __kernel_timespec bound{};
  bound.tv_sec = 1;  // keeps the Date header fresh when idle, like raw_epoll_http's wait
  arg.ts = reinterpret_cast<__u64>(&bound);
  while (!g_stop) {
    __atomic_store_n(g_br_tail_shared, g_br_tail, __ATOMIC_RELEASE);
    // One completion beyond those the SQEs just queued will post (see the header comment).
    const int r =
        enter(g_expect + 1, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg, sizeof arg);
    if (r < 0 && errno != EINTR && errno != ETIME && errno != EAGAIN && errno != EBUSY) {
      std::fprintf(stderr, "raw_uring_http: io_uring_enter: %s\n", std::strerror(errno));
      return;
    }
    refresh_date();
    unsigned head = *g_cq_head;
    for (;;) {
      const unsigned tail = __atomic_load_n(g_cq_tail, __ATOMIC_ACQUIRE);
      if (head == tail) break;
      while (head != tail) {
        const io_uring_cqe* cqe = &g_cqes[head & g_cq_mask];
        const uint64_t u = cqe->user_data;
        const int res = cqe->res;
        const unsigned flags = cqe->flags;
        ++head;
        auto* c = reinterpret_cast<connection*>(u & ~uint64_t{7});
        switch (static_cast<tag>(u & 7)) {
          case kRecv:
            on_recv(c, res, flags);
            break;
          case kSend:
            on_send(c, res);
            break;
          case kAccept:
            on_accept(res, flags);
            break;
          case kClose:
            g_free_slots.push_back(static_cast<int>(u >> 3));
            break;
          case kStop:
            g_stop = true;
            break;
          case kCancel:
            break;
        }
      }
      __atomic_store_n(g_cq_head, head, __ATOMIC_RELEASE);
    }
    // One send per connection for everything this round produced.
    for (connection* c : g_to_send) {
      c->queued = false;
      if (!c->failed && !c->send_busy && !c->out.empty()) {
        submit_send(c);
      } else if (c->closing) {
        maybe_close(c);
      }
    }
    g_to_send.clear();
  }
}

}  // namespace

int main(int argc, char** argv) {
  const peer::args args = peer::parse_args(argc, argv, "raw_uring_http");
  signal(SIGPIPE, SIG_IGN);
  // The stop signals stay blocked and are read from a signalfd polled in the ring, so a stop is
  // one more completion: none can be lost between the g_stop check and the wait. Not a handler
  // plus io_uring_enter's sigmask argument (raw_epoll_http's way with epoll_pwait): valgrind
  // 3.19, which scripts/bench runs this peer under for --callgrind, treats io_uring_enter as a
  // call that does not block, so a signal unblocked inside it trips an assertion in valgrind,
  // and one left blocked by valgrind is never delivered while the server is idle.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigprocmask(SIG_BLOCK, &stop_signals, nullptr);
  g_signal_fd = signalfd(-1, &stop_signals, SFD_CLOEXEC);  // blocking: the ring polls it
  if (g_signal_fd < 0) {
    std::fprintf(stderr, "raw_uring_http: signalfd: %s\n", std::strerror(errno));
    return 1;
  }

  refresh_date();
  g_to_send.reserve(4096);
  if (!setup_ring()) return 1;
  int port = 0;
  g_lfd = peer::listen_loopback(args.port, "raw_uring_http", &port);
  if (g_lfd < 0) return 1;
  arm_accept();
  arm_stop();
  peer::announce(port);
  run();
  return 0;
}
