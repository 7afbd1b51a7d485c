//! The wire and storage forms of the automation model (SPEC §18): tasks and
//! templates (`proto/tether/v1/automation.proto`), traces and the engine's
//! snapshot (`proto/tether/v1/automation_state.proto`). Every decoder takes
//! untrusted bytes and returns a typed [`WireError`], never panics.

mod snapshot;
mod task;
mod trace;

#[allow(unused_imports)]
pub use snapshot::*;
#[allow(unused_imports)]
pub use task::*;
#[allow(unused_imports)]
pub use trace::*;

/// Why bytes or a protobuf message do not make a valid model value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not a protobuf message of the expected type.
    #[error("malformed message: {0}")]
    Decode(String),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// A number does not fit the model's type or range.
    #[error("field `{0}` out of range")]
    OutOfRange(&'static str),
    /// An enum value this version does not know.
    #[error("unknown value {value} in `{field}`")]
    UnknownEnum {
        /// The field.
        field: &'static str,
        /// The value received.
        value: i32,
    },
    /// Longer or deeper than the engine's limits allow.
    #[error("`{0}` exceeds its limit")]
    TooLarge(&'static str),
    /// A list names the same entry twice (a place, hold or run of a
    /// snapshot), which the engine never writes.
    #[error("`{0}` lists an entry twice")]
    Duplicate(&'static str),
    /// A real number that is NaN or infinite where the model needs a
    /// finite one.
    #[error("field `{0}` is not a finite number")]
    NotFinite(&'static str),
}
