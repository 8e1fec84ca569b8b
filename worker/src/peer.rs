//! The client's address, for the application: readable with
//! [`client_addr`] while [`crate::App::call`] runs (its synchronous part).
//! A connection does not store it (an idle connection would carry it for
//! nothing, see `bench/connections.sh`); the socket is asked when the
//! application wants it, such as for a rate limit by address.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use crate::wire::Wire;

thread_local! {
    /// The connection of the request being called (a worker is one thread).
    static CURRENT: RefCell<Option<Rc<Wire>>> = const { RefCell::new(None) };
}

/// The address of the client whose request the application is being
/// called with; `None` outside [`crate::App::call`].
pub fn client_addr() -> Option<SocketAddr> {
    CURRENT.with(|current| current.borrow().as_ref().and_then(|wire| wire.peer_addr()))
}

/// Runs `f` with `wire` as the current connection.
pub(crate) fn with_wire<R>(wire: &Rc<Wire>, f: impl FnOnce() -> R) -> R {
    let previous = CURRENT.with(|current| current.replace(Some(wire.clone())));
    let result = f();
    CURRENT.with(|current| *current.borrow_mut() = previous);
    result
}
