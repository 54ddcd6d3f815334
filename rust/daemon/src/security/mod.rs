//! Who may do what on a head (#11): the tokens it accepts ([`tokens`]) and how a request's
//! authenticated identity travels from the auth interceptor to the services (a
//! [`Principal`] in the request's extensions). The design every part follows is README
//! "Security".

pub mod tokens;

use flame_core::auth::Principal;
use tonic::{Request, Status};

/// The caller the auth interceptor authenticated, or UNAUTHENTICATED if none was (a call
/// that reached a service without going through the interceptor is refused, not trusted).
///
/// # Errors
/// `UNAUTHENTICATED` when the request carries no principal.
pub fn principal<T>(req: &Request<T>) -> Result<&Principal, Status> {
    req.extensions()
        .get::<Principal>()
        .ok_or_else(|| Status::unauthenticated("no credentials were checked for this call"))
}
