// The udp_batch tests again, against the recvmsg/sendto fallback used where recvmmsg/sendmmsg are
// missing (this target is compiled with EVNET_HAVE_MMSG=0, udp_batch.cc included).
#define UDP_BATCH_SUITE udp_batch_fallback
#include "test_udp_batch.cc"  // NOLINT(bugprone-suspicious-include): compiled again on purpose
