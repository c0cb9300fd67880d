//! tracefs `trace`/`trace_pipe` text and `trace-cmd report` output.
