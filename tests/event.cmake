evnet_test(test_event LAYERS event)
