//! The one table from Rust errors to the exception classes of `flame.errors`.

use flame_core::FlameError;
use pyo3::PyErr;

/// The exception classes, defined in Python (`python/flame/errors.py`).
mod py {
    pyo3::import_exception!(flame.errors, FlameError);
    pyo3::import_exception!(flame.errors, ConnectionError);
    pyo3::import_exception!(flame.errors, SessionError);
    pyo3::import_exception!(flame.errors, InvalidArgumentError);
    pyo3::import_exception!(flame.errors, PayloadTooLargeError);
    pyo3::import_exception!(flame.errors, ObjectLostError);
    pyo3::import_exception!(flame.errors, NotFoundError);
    pyo3::import_exception!(flame.errors, ClusterStateLostError);
    pyo3::import_exception!(flame.errors, StorageUnavailableError);
    pyo3::import_exception!(flame.errors, AuthenticationError);
    pyo3::import_exception!(flame.errors, PermissionDeniedError);
}

pub use py::{
    ConnectionError, InvalidArgumentError, NotFoundError, PayloadTooLargeError, SessionError,
};

/// What kind of object a call was about, so a remote NOT_FOUND gets the right class.
#[derive(Clone, Copy)]
pub enum About {
    Session,
    Object,
    /// A task: unknown is `NotFoundError`, already finished (nothing to cancel) is invalid.
    Task,
    Other,
}

pub fn to_py(e: FlameError, about: About) -> PyErr {
    let msg = e.to_string();
    match e {
        FlameError::Unreachable { .. }
        | FlameError::ConnectionLost(_)
        | FlameError::ShuttingDown => ConnectionError::new_err(msg),
        FlameError::SessionNotFound(_) | FlameError::SessionClosed(_) => SessionError::new_err(msg),
        FlameError::NotFound(_) | FlameError::FailedPrecondition(_) => match about {
            About::Session => SessionError::new_err(msg),
            About::Object => py::ObjectLostError::new_err(msg),
            About::Task if matches!(e, FlameError::NotFound(_)) => NotFoundError::new_err(msg),
            About::Task | About::Other => InvalidArgumentError::new_err(msg),
        },
        FlameError::InvalidArgument(_) | FlameError::ApplicationNotFound(_) => {
            InvalidArgumentError::new_err(msg)
        }
        FlameError::PayloadTooLarge(_) => PayloadTooLargeError::new_err(msg),
        FlameError::ClusterStateLost(_) => py::ClusterStateLostError::new_err(msg),
        FlameError::AlreadyExists(_) => InvalidArgumentError::new_err(msg),
        FlameError::Timeout(_)
        | FlameError::Storage(_)
        | FlameError::StateFileUnusable(_)
        | FlameError::Internal(_)
        | FlameError::Busy(_) => py::FlameError::new_err(msg),
        FlameError::StorageUnavailable(_) => py::StorageUnavailableError::new_err(msg),
        FlameError::Unauthenticated(_) => py::AuthenticationError::new_err(msg),
        FlameError::PermissionDenied(_) => py::PermissionDeniedError::new_err(msg),
    }
}

/// Shorthand for calls that are not about a session.
pub fn err(e: FlameError) -> PyErr {
    to_py(e, About::Other)
}
