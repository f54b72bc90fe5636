# Examples of the net layer (owner: net-core engineer). Contract: shared DESIGN.md.
# echo_server: TCP/UDP/Unix echo, the main benchmark target.
evnet_example(echo_server LAYERS net)
# push_server: pushes the time to every client every second (cross-thread conn::send).
evnet_example(push_server LAYERS net)
# max_conn_server: echo with engine_options::max_connections.
evnet_example(max_conn_server LAYERS net)
# echo_client: engine::dial client that verifies every echoed byte.
evnet_example(echo_client LAYERS net)
