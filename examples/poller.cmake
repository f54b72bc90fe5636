# Poller layer examples (owner: poller engineer).
# poll_echo: edge-triggered TCP echo server directly on the poller; scripts/bench's first target.
evnet_example(poll_echo LAYERS poller)
