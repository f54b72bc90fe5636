# Examples of the net layer (owner: net-core engineer). Contract: shared DESIGN.md.
# echo_server: TCP/UDP/Unix echo, the main benchmark target.
evnet_example(echo_server LAYERS net)
