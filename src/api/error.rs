//! Errors as Docker's clients read them: a status code and `{"message": ...}`. The codes
//! matter: a 404 on a missing image is what makes `docker run` pull and retry, 409 is a name
//! conflict or a container in the way, 304 an already started or stopped one.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::engine::EngineError;
use crate::image::registry::RegistryError;
use crate::image::ImageError;
use crate::net::NetError;
use crate::state::volumes::VolumeError;
use crate::state::StateError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "message": self.message })),
        )
            .into_response()
    }
}

/// The status code an engine error is, as Docker's daemon answers the same case.
fn status_of(e: &EngineError) -> StatusCode {
    use StatusCode as S;
    match e {
        EngineError::State(s) => match s {
            StateError::NotFound(_) => S::NOT_FOUND,
            StateError::NameInUse { .. } | StateError::Running(_) => S::CONFLICT,
            StateError::BadName(_) | StateError::Ambiguous { .. } => S::BAD_REQUEST,
            _ => S::INTERNAL_SERVER_ERROR,
        },
        EngineError::Image(i) => match i {
            ImageError::NotFound(_) => S::NOT_FOUND,
            ImageError::Reference(_) | ImageError::Ambiguous { .. } => S::BAD_REQUEST,
            _ => S::INTERNAL_SERVER_ERROR,
        },
        EngineError::NoSuchImage { .. } => S::NOT_FOUND,
        EngineError::Registry(r) => match r {
            // Docker's "pull access denied" is a 404 too: a 401 makes the docker CLI prompt
            // for a login on its stdin.
            RegistryError::NotFound { .. }
            | RegistryError::AccessDenied { .. }
            | RegistryError::Image(ImageError::NotFound(_)) => S::NOT_FOUND,
            RegistryError::BadCredentials { .. } => S::UNAUTHORIZED,
            RegistryError::Platform(_)
            | RegistryError::Reference(_)
            | RegistryError::Image(ImageError::Reference(_) | ImageError::Usage(_)) => {
                S::BAD_REQUEST
            }
            _ => S::INTERNAL_SERVER_ERROR,
        },
        EngineError::Volume(v) => match v {
            VolumeError::NotFound(_) => S::NOT_FOUND,
            VolumeError::BadName(_) => S::BAD_REQUEST,
            VolumeError::State(StateError::Running(_)) | VolumeError::InUse { .. } => S::CONFLICT,
            _ => S::INTERNAL_SERVER_ERROR,
        },
        EngineError::Net(n) => match n {
            NetError::NoSuchNetwork(_) => S::NOT_FOUND,
            // Docker answers 403 for a network with active endpoints.
            NetError::InUse { .. }
            | NetError::NotConnected { .. }
            | NetError::AlreadyConnected { .. } => S::FORBIDDEN,
            NetError::CannotConnect { .. } => S::CONFLICT,
            // Names, subnets and overlaps: what the client asked for.
            NetError::Store(_) => S::BAD_REQUEST,
            NetError::Exists(_) | NetError::PortInUse { .. } => S::CONFLICT,
            NetError::UnknownNetwork(_)
            | NetError::BadPort { .. }
            | NetError::BadOption(_)
            | NetError::NeedsOwnNetwork { .. } => S::BAD_REQUEST,
            _ => S::INTERNAL_SERVER_ERROR,
        },
        EngineError::Usage(_) | EngineError::Spec(_) => S::BAD_REQUEST,
        EngineError::NotRunning(_) => S::CONFLICT,
        EngineError::NoSuchPath { .. } => S::NOT_FOUND,
        _ => S::INTERNAL_SERVER_ERROR,
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        ApiError::new(status_of(&e), e.to_string())
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> ApiError {
        ApiError::internal(format!("the request's worker failed: {e}"))
    }
}

/// Runs a blocking engine call on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, EngineError> + Send + 'static,
    T: Send + 'static,
{
    Ok(tokio::task::spawn_blocking(f).await??)
}
