// A stand-in for BSD <sys/event.h> on Linux, for two uses:
//  1. tests/poller.cmake compiles src/poller/kqueue.cc against it (target
//     poller_kqueue_compile_check_*), so the backend keeps building as the backend interface
//     evolves. Those objects are never linked.
//  2. tests/poller_kqueue.cmake links the poller layer, built with the kqueue backend enabled,
//     against tests/kqueue_shim/kqueue_emul.cc: a user-space kqueue()/kevent() over epoll, so the
//     poller suites run the kqueue backend's logic here. What that emulation models and what it
//     does not is listed at the top of kqueue_emul.cc.
// The layout and values follow FreeBSD's header; the code under test must not depend on them
// beyond the names. Only what kqueue.cc and the emulation's own tests use is declared.
#pragma once

#include <stdint.h>
#include <time.h>

#define EVFILT_READ (-1)
#define EVFILT_WRITE (-2)
#ifndef EVNET_KQUEUE_SHIM_NO_USER
#define EVFILT_USER (-11)
#define NOTE_TRIGGER 0x01000000
#endif

// Actions.
#define EV_ADD 0x0001
#define EV_DELETE 0x0002
#define EV_ENABLE 0x0004
#define EV_DISABLE 0x0008
// Flags.
#define EV_ONESHOT 0x0010
#define EV_CLEAR 0x0020
#define EV_RECEIPT 0x0040
#define EV_DISPATCH 0x0080
// Returned values.
#define EV_ERROR 0x4000
#define EV_EOF 0x8000

struct kevent {
  uintptr_t ident;
  short filter;
  unsigned short flags;
  unsigned int fflags;
  int64_t data;
  void* udata;
  uint64_t ext[4];
};

#define EV_SET(kevp, a, b, c, d, e, f) \
  do {                                 \
    struct kevent* ev_set_p_ = (kevp); \
    ev_set_p_->ident = (a);            \
    ev_set_p_->filter = (b);           \
    ev_set_p_->flags = (c);            \
    ev_set_p_->fflags = (d);           \
    ev_set_p_->data = (e);             \
    ev_set_p_->udata = (f);            \
    ev_set_p_->ext[0] = 0;             \
    ev_set_p_->ext[1] = 0;             \
    ev_set_p_->ext[2] = 0;             \
    ev_set_p_->ext[3] = 0;             \
  } while (0)

extern "C" int kqueue(void);
// Not kqueue's: the emulation's fault injection (kqueue_emul.cc). The nth EVFILT_READ or
// EVFILT_WRITE change from now on fails with errno `err` and changes nothing; 0 disarms it.
extern "C" void kqueue_emul_fail_change(int nth, int err);
// Also the emulation's: fn(arg) runs on the calling thread as each kevent() call that collects
// events starts its wait, until set back to null (fn may do that itself).
extern "C" void kqueue_emul_before_wait(void (*fn)(void*), void* arg);
extern "C" int kevent(int kq, const struct kevent* changelist, int nchanges,
                      struct kevent* eventlist, int nevents, const struct timespec* timeout);
