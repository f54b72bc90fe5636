# Poller micro-benchmarks (owner: poller engineer): trigger() cost with 1 and 4 producers, and
# the cost of a poll round with 1, 64 and 1024 ready descriptors (plus a raw epoll baseline).
evnet_micro(poller_bench LAYERS poller)
