"""A tiny Flower app that trains through fedrot's CompressedStrategy + compression_mod."""
