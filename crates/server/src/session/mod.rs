//! The echo session, on the core: one for the blocking strategies ([`blocking`]: read up to the
//! buffer, write it all back, until the peer ends its side) and one state machine for the
//! nonblocking ones ([`nonblocking`]: the same session driven by readiness or completions, with
//! the same clocks and the same backpressure rule).

pub mod blocking;
pub mod nonblocking;
