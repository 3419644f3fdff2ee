//! Who is calling. One interceptor turns request metadata into an [`Actor`] in the request's
//! extensions; handlers ask for it with [`actor`]. Development mode (the only mode of this
//! release) trusts the `x-user-id` header: fine on a laptop or behind an OA backend that sets it,
//! and logged loudly at start because it authenticates nothing.
use tonic::{Request, Status};

use crate::workflow::Actor;

pub const USER_ID_HEADER: &str = "x-user-id";

/// The interceptor of development mode.
pub fn dev_mode(mut request: Request<()>) -> Result<Request<()>, Status> {
    if let Some(value) = request.metadata().get(USER_ID_HEADER) {
        let user_id = value
            .to_str()
            .map_err(|_| Status::unauthenticated("x-user-id: must be printable ASCII"))?
            .trim()
            .to_string();
        if user_id.is_empty() || user_id.len() > 200 {
            return Err(Status::unauthenticated("x-user-id: 1 to 200 characters"));
        }
        request.extensions_mut().insert(Actor::new(user_id));
    }
    Ok(request)
}

/// The caller of a request that passed the interceptor.
pub fn actor<T>(request: &Request<T>) -> Result<Actor, Status> {
    request.extensions().get::<Actor>().cloned().ok_or_else(|| {
        Status::unauthenticated("no caller identity: send x-user-id metadata (development mode)")
    })
}
