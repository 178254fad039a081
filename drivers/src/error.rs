//! Driver errors: each says what went wrong with which BMC in words an
//! operator can act on, and never contains a password.

/// A BMC call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    #[error("driver_info is invalid: {0}")]
    Invalid(#[from] InvalidDriverInfo),
    #[error("driver '{0}' is not available in this build of kiln")]
    Unsupported(String),
    /// The driver has no such operation (virtual media over IPMI).
    #[error("the {driver} driver cannot {operation}")]
    NotSupported { driver: String, operation: String },
    #[error("cannot reach the BMC at {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("the BMC at {address} did not answer within {seconds} s")]
    Timeout { address: String, seconds: u64 },
    #[error("the BMC at {address} refused the credentials (check username and password)")]
    Auth { address: String },
    #[error("the BMC at {address} answered with an error: {detail}")]
    Bmc { address: String, detail: String },
    #[error("the BMC at {address} sent a reply kiln cannot read: {detail}")]
    BadReply { address: String, detail: String },
    #[error("the BMC at {address} did not reach power {target} within {seconds} s")]
    PowerTimeout { address: String, target: String, seconds: u64 },
    #[error(
        "the Redfish service at {address} has several systems ({systems}); set driver_info.system_id to one of them"
    )]
    AmbiguousSystem { address: String, systems: String },
    #[error("cannot run {tool} for the BMC at {address}: {reason}")]
    Tool { tool: String, address: String, reason: String },
    #[error("simulated BMC failure ({0})")]
    Injected(String),
    #[error("the driver crashed: {0}")]
    Panicked(String),
    #[error("the driver for this BMC is not running")]
    Unavailable,
    /// The member this call would be sent from can no longer prove it is
    /// alive (a store shared by several members): its nodes may be another
    /// member's now, and a BMC cannot check who asks.
    #[error("not sent: {0}")]
    Fenced(String),
}

/// A node's `driver_info` is missing a field or has a malformed one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDriverInfo {
    #[error("driver_info.{field} is required for the {driver} driver")]
    Missing { driver: String, field: &'static str },
    #[error("driver_info.{field} = '{value}' is not valid: {why}")]
    Malformed { field: String, value: String, why: String },
    #[error("driver_info.{field} is not a {driver} driver setting (known: {known})")]
    Unknown { driver: String, field: String, known: String },
    #[error("unknown driver '{0}' (expected one of: {known})", known = crate::Kind::names(", "))]
    UnknownDriver(String),
}
