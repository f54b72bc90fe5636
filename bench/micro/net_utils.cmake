# Micro-benchmarks of the net layer's building blocks (owned by the net-utils engineer).
# framing_bench: line and length-field decoders over contiguous and split (ring-wrapped) input.
evnet_micro(framing_bench LAYERS common SOURCES ${PROJECT_SOURCE_DIR}/src/net/framing.cc)
