"""A tiny Flower app trained through fedrot's CompressedStrategy + compression_mod."""
