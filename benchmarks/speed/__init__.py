"""Speed and memory: training steps, compilation, rendering, decoding, a data set in memory."""
