//! The one error type of ECS operations: an exception name from the ECS model and AWS's message.

use estiba_api::ecs::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsError {
    pub code: ErrorCode,
    pub message: String,
}

pub type Result<T, E = EcsError> = std::result::Result<T, E>;

impl std::fmt::Display for EcsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl std::error::Error for EcsError {}

impl From<EcsError> for estiba_api::ApiError {
    fn from(e: EcsError) -> Self {
        estiba_api::ApiError::new(e.code, e.message)
    }
}

impl EcsError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        EcsError { code, message: message.into() }
    }

    /// `ClientException`: the request is wrong in a way the caller can fix.
    pub fn client(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ClientException, message)
    }

    /// `InvalidParameterException`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameterException, message)
    }

    pub fn server(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ServerException, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::UnsupportedFeatureException, message)
    }

    pub fn cluster_not_found() -> Self {
        Self::new(ErrorCode::ClusterNotFoundException, "Cluster not found.")
    }

    pub fn service_not_found() -> Self {
        Self::new(ErrorCode::ServiceNotFoundException, "Service not found.")
    }

    pub fn service_not_active() -> Self {
        Self::new(ErrorCode::ServiceNotActiveException, "Service was not ACTIVE.")
    }

    pub fn task_definition_not_found() -> Self {
        Self::client("Unable to describe task definition.")
    }

    pub fn resource_not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceNotFoundException, message)
    }
}

/// Returns early with an error built from the arguments.
#[macro_export]
macro_rules! bail {
    ($kind:ident, $($fmt:tt)*) => {
        return Err($crate::EcsError::$kind(format!($($fmt)*)))
    };
}
