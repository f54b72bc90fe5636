# Examples of the event layer (owned by the event engineer).
evnet_example(event_echo LAYERS event)
evnet_example(ticker LAYERS event)
