# HTTP / WebSocket examples (owner: protocols engineer). Contract: shared DESIGN.md.
evnet_example(http_server LAYERS http)
evnet_example(ws_echo_server LAYERS ws)
evnet_example(ws_client LAYERS ws)
evnet_example(upload_server LAYERS http LIBS ZLIB::ZLIB)
