# HTTP / WebSocket examples (owner: protocols engineer). Contract: shared DESIGN.md.
evnet_example(http_server LAYERS http)
