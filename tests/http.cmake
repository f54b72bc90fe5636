# HTTP/1.1 layer tests (owner: protocols engineer).
evnet_test(test_http_parser LAYERS http)
