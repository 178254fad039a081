//! Errors as Ironic answers them: its status codes, and its body
//! `{"error_message": "{\"faultstring\": ..., \"faultcode\": ..., \"debuginfo\": null}"}`
//! (a JSON document inside a string), which both clients unpack to show
//! the message.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use kiln_actors::KilnError;

/// A request answered with an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// What kiln does not serve, naming what does instead.
    pub fn not_served(what: &str, instead: &str) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, format!("kiln does not serve {what}; {instead}"))
    }
}

/// The status Ironic gives each kind of failure.
pub fn status_of(e: &KilnError) -> StatusCode {
    match e {
        KilnError::NotFound(_) => StatusCode::NOT_FOUND,
        KilnError::InvalidState { .. } | KilnError::InvalidInput(_) | KilnError::Protocol(_) => StatusCode::BAD_REQUEST,
        KilnError::NodeLocked { .. } | KilnError::Conflict(_) => StatusCode::CONFLICT,
        KilnError::Driver { .. } | KilnError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        KilnError::Unavailable(_) | KilnError::Canceled(_) | KilnError::Drained | KilnError::QueueFull { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

impl From<KilnError> for ApiError {
    fn from(e: KilnError) -> Self {
        ApiError { status: status_of(&e), message: e.to_string() }
    }
}

/// Ironic's error body for `message`.
pub fn body(status: StatusCode, message: &str) -> String {
    let fault = if status.is_server_error() { "Server" } else { "Client" };
    let inner = serde_json::json!({"faultstring": message, "faultcode": fault, "debuginfo": null});
    serde_json::json!({"error_message": inner.to_string()}).to_string()
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).content_type("application/json").body(body(self.status, &self.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_ironics_json_in_a_string() {
        let b: serde_json::Value = serde_json::from_str(&body(StatusCode::CONFLICT, "node n1 is locked")).unwrap();
        let inner: serde_json::Value = serde_json::from_str(b["error_message"].as_str().unwrap()).unwrap();
        assert_eq!(
            inner,
            serde_json::json!({"faultstring": "node n1 is locked", "faultcode": "Client", "debuginfo": null})
        );
        let b: serde_json::Value = serde_json::from_str(&body(StatusCode::INTERNAL_SERVER_ERROR, "x")).unwrap();
        assert!(b["error_message"].as_str().unwrap().contains("\"Server\""));
    }

    #[test]
    fn a_locked_node_is_409_and_a_bad_transition_400() {
        let locked = KilnError::NodeLocked { node: "n".into(), holder_purpose: "deploy".into(), since: "t".into() };
        assert_eq!(ApiError::from(locked).status, StatusCode::CONFLICT);
        let bad = KilnError::InvalidState {
            node: "n".into(),
            state: "enroll".into(),
            event: "deploy".into(),
            allowed: "manage".into(),
        };
        assert_eq!(ApiError::from(bad).status, StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::from(KilnError::NotFound("x".into())).status, StatusCode::NOT_FOUND);
    }
}
