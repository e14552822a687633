//! Errors as they go on the wire, for every service and protocol.
//!
//! Each service's model declares its exceptions (the generated `ErrorCode` enums); AWS also
//! answers errors no model declares, common to all services ([`Common`]). Both describe
//! themselves through [`ErrorShape`]; [`ApiError`] is an error ready for the wire, which the
//! server's front door encodes in the request's protocol.

/// What the wire needs to know of an error code.
pub trait ErrorShape: Copy {
    /// The error code: `__type` in JSON answers, `Code` in Query answers.
    fn name(self) -> &'static str;
    /// The exception's shape name: `__type` of a query-compatible service's JSON and CBOR
    /// answers (the code then goes in `x-amzn-query-error`).
    fn shape_name(self) -> &'static str;
    fn status(self) -> u16;
    /// The caller is at fault (`Sender`), not the service (`Receiver`).
    fn sender_fault(self) -> bool;
}

/// AWS's errors common to every service, which no model declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Common {
    /// The service failed (status 500).
    InternalFailure,
    /// The request has no operation this service knows (JSON and CBOR).
    UnknownOperationException,
    /// The `Action` of a Query request is not one of the service's.
    InvalidAction,
    /// A Query request without `Action`.
    MissingAction,
    /// The body cannot be read in the request's protocol (JSON, CBOR).
    SerializationException,
    /// The input breaks the model's constraints (Query services).
    ValidationError,
    /// A required parameter is missing (Query services).
    MissingParameter,
    /// A parameter's value is malformed (Query services).
    InvalidParameterValue,
    /// A parameter the operation does not have (EC2).
    UnknownParameter,
    /// A Query request's `Version` is not the service's.
    NoSuchVersion,
    /// The body is larger than the server accepts.
    RequestEntityTooLarge,
    /// The service is known to estiba but the operation is not answered yet.
    NotImplemented,
    /// A temporary failure of the server (status 503): retry.
    ServiceUnavailable,
    /// The client did not send the request in time (status 408).
    RequestTimeout,
}

impl ErrorShape for Common {
    fn name(self) -> &'static str {
        match self {
            Common::InternalFailure => "InternalFailure",
            Common::UnknownOperationException => "UnknownOperationException",
            Common::InvalidAction => "InvalidAction",
            Common::MissingAction => "MissingAction",
            Common::SerializationException => "SerializationException",
            Common::ValidationError => "ValidationError",
            Common::MissingParameter => "MissingParameter",
            Common::InvalidParameterValue => "InvalidParameterValue",
            Common::UnknownParameter => "UnknownParameter",
            Common::NoSuchVersion => "NoSuchVersion",
            Common::RequestEntityTooLarge => "RequestEntityTooLargeException",
            Common::NotImplemented => "NotImplemented",
            Common::ServiceUnavailable => "ServiceUnavailable",
            Common::RequestTimeout => "RequestTimeout",
        }
    }

    fn shape_name(self) -> &'static str {
        self.name()
    }

    fn status(self) -> u16 {
        match self {
            Common::InternalFailure => 500,
            Common::RequestEntityTooLarge => 413,
            Common::NotImplemented => 501,
            Common::ServiceUnavailable => 503,
            Common::RequestTimeout => 408,
            _ => 400,
        }
    }

    fn sender_fault(self) -> bool {
        !matches!(self, Common::InternalFailure | Common::NotImplemented | Common::ServiceUnavailable)
    }
}

/// An error ready for the wire: its code, shape name, HTTP status, fault and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: &'static str,
    pub shape: &'static str,
    pub status: u16,
    pub sender_fault: bool,
    pub message: String,
}

impl ApiError {
    pub fn new(e: impl ErrorShape, message: impl Into<String>) -> Self {
        ApiError {
            code: e.name(),
            shape: e.shape_name(),
            status: e.status(),
            sender_fault: e.sender_fault(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}
