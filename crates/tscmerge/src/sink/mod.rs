//! Where merged events go. Sinks know nothing of where events came from:
//! they see a machine index, its name, and an [`EventView`].

pub mod json;
pub mod text;

pub use json::JsonSink;
pub use text::{TextSink, TsFormat};
