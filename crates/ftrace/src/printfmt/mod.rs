//! The `print fmt:` language of tracefs format files.
