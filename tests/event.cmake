# Tests of the event layer (owned by the event engineer).
evnet_test(test_event LAYERS event)
evnet_test(test_event_timers LAYERS event)
evnet_test(test_event_threads LAYERS event LABELS tsan)
evnet_test(test_event_signals LAYERS event LABELS tsan)
evnet_test(test_event_run_until LAYERS event LABELS tsan)
