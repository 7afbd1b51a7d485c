//! Why a management request or a host input was refused, and the wire error
//! code each maps to (SPEC §7, §16.7).

use tether_proto::v1::ErrorCode;
use thiserror::Error;

/// Why a reorder was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OrderError {
    /// The list does not hold every device the requester sees.
    #[error("the order lists {got} devices, the requester sees {expected}")]
    WrongLength {
        /// How many the requester sees.
        expected: usize,
        /// How many the list holds.
        got: usize,
    },
    /// A handle names no device the requester sees (or is malformed).
    #[error("the order names an unknown device at position {0}")]
    UnknownHandle(usize),
    /// A handle appears twice.
    #[error("the order names a device twice, again at position {0}")]
    Duplicate(usize),
}

/// Why a request or input was refused. [`DeviceError::code`] gives the wire
/// error code.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The handle names no device the requester may see (or the device
    /// reference names no stored device).
    #[error("unknown device")]
    UnknownDevice,
    /// A handle is not [`HANDLE_BYTES`](crate::HANDLE_BYTES) bytes long.
    #[error("malformed device handle")]
    MalformedHandle,
    /// The device's product model is not in the catalogue: it can be listed,
    /// renamed, sorted and unbound, not controlled.
    #[error("unknown product model {0:#06x}")]
    UnknownModel(u16),
    /// The model has no property `siid.piid`.
    #[error("unknown property {siid}.{piid}")]
    UnknownProperty {
        /// Service iid.
        siid: u32,
        /// Property iid.
        piid: u32,
    },
    /// The model has no action `siid.aiid`.
    #[error("unknown action {siid}.{aiid}")]
    UnknownAction {
        /// Service iid.
        siid: u32,
        /// Action iid.
        aiid: u32,
    },
    /// The model has no event `siid.eiid` (a device's report).
    #[error("unknown event {siid}.{eiid}")]
    UnknownEvent {
        /// Service iid.
        siid: u32,
        /// Event iid.
        eiid: u32,
    },
    /// The property cannot be written.
    #[error("property {siid}.{piid} is read-only")]
    ReadOnly {
        /// Service iid.
        siid: u32,
        /// Property iid.
        piid: u32,
    },
    /// The value is of the right format but outside the range or value list
    /// (or too long, or not finite).
    #[error("value out of range for property {siid}.{piid}")]
    OutOfRange {
        /// Service iid.
        siid: u32,
        /// Property iid.
        piid: u32,
    },
    /// The value is missing or of another format than the property's.
    #[error("wrong value format for property {siid}.{piid}")]
    WrongFormat {
        /// Service iid.
        siid: u32,
        /// Property iid.
        piid: u32,
    },
    /// An action or event got the wrong number of arguments.
    #[error("expected {expected} arguments, got {got}")]
    WrongArguments {
        /// How many the model lists.
        expected: usize,
        /// How many came.
        got: usize,
    },
    /// A write names the same property twice.
    #[error("property {siid}.{piid} written twice in one request")]
    DuplicateProperty {
        /// Service iid.
        siid: u32,
        /// Property iid.
        piid: u32,
    },
    /// A write with no values, or more than
    /// [`MAX_VALUES_PER_REQUEST`](crate::MAX_VALUES_PER_REQUEST).
    #[error("a write must carry 1 to {} values", crate::MAX_VALUES_PER_REQUEST)]
    ValueCount,
    /// A name that is empty, too long or holds control characters.
    #[error(
        "a device name is 1 to {} bytes without control characters",
        crate::MAX_NAME_BYTES
    )]
    BadName,
    /// The reorder list is not a permutation of the requester's devices.
    #[error("invalid order: {0}")]
    BadOrder(#[from] OrderError),
    /// The device is not online (not seen since the last scan, or lost): a
    /// command cannot reach it now.
    #[error("the device is offline")]
    Offline,
    /// The request is not a management request (SPEC §16.5).
    #[error("not a device management request")]
    NotManagement,
    /// A model in the catalogue is incoherent (see [`check_model`](crate::check_model)).
    #[error("invalid device model: {0}")]
    InvalidModel(&'static str),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] tether_store::StoreError),
}

impl DeviceError {
    /// The wire error code that answers this refusal (SPEC §16.7).
    pub fn code(&self) -> ErrorCode {
        match self {
            DeviceError::UnknownDevice
            | DeviceError::UnknownProperty { .. }
            | DeviceError::UnknownAction { .. }
            | DeviceError::UnknownEvent { .. } => ErrorCode::NotFound,
            DeviceError::MalformedHandle
            | DeviceError::ReadOnly { .. }
            | DeviceError::OutOfRange { .. }
            | DeviceError::WrongFormat { .. }
            | DeviceError::WrongArguments { .. }
            | DeviceError::DuplicateProperty { .. }
            | DeviceError::ValueCount
            | DeviceError::BadName
            | DeviceError::BadOrder(_) => ErrorCode::BadRequest,
            // "Retry later": the device may come back online.
            DeviceError::Offline => ErrorCode::Busy,
            DeviceError::UnknownModel(_) | DeviceError::NotManagement => ErrorCode::Unsupported,
            DeviceError::InvalidModel(_) | DeviceError::Store(_) => ErrorCode::Internal,
        }
    }
}
