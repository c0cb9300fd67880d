//! Ring-buffer pages as the kernel writes them to `trace_pipe_raw`.
