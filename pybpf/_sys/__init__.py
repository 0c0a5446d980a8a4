"""The only code that calls the kernel: ``bpf(2)`` over ctypes attr structs, and its constants."""
