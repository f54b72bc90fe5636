// A minimal stand-in for BSD <sys/event.h>, used only to COMPILE src/poller/kqueue.cc on Linux
// (target poller_kqueue_compile_check), so the kqueue backend keeps building as the backend
// interface evolves. Nothing links or runs against it. The layout and values follow FreeBSD's
// header; the code under test must not depend on them beyond the names.
#pragma once

#include <stdint.h>
#include <time.h>

#define EVFILT_READ (-1)
#define EVFILT_WRITE (-2)
#ifndef EVNET_KQUEUE_SHIM_NO_USER
#define EVFILT_USER (-11)
#define NOTE_TRIGGER 0x01000000
#endif

#define EV_ADD 0x0001
#define EV_DELETE 0x0002
#define EV_ENABLE 0x0004
#define EV_DISABLE 0x0008
#define EV_CLEAR 0x0020
#define EV_RECEIPT 0x0040
#define EV_DISPATCH 0x0080
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

extern "C" int kqueue(void);
extern "C" int kevent(int kq, const struct kevent* changelist, int nchanges,
                      struct kevent* eventlist, int nevents, const struct timespec* timeout);
