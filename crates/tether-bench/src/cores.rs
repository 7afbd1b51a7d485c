//! The account-bound handshake's own cost: both sans-IO cores driven
//! against each other in memory, with no QUIC, sockets or tasks. Subtracted
//! from a measured handshake it tells protocol CPU from transport overhead.

use std::sync::Arc;
use std::time::Duration;

use tether_identity::Credentials;
use tether_session::{
    ClientHandshake, Event, HandshakeConfig, Output, ResumptionTicket, ServerHandshake, TicketKey,
};

use crate::error::BenchError;

/// One side's pending frames and the events it produced.
#[derive(Default)]
struct Drained {
    frames: Vec<Vec<u8>>,
    authenticated: bool,
    ticket: Option<ResumptionTicket>,
}

fn drain(mut poll: impl FnMut() -> Output) -> Drained {
    let mut out = Drained::default();
    loop {
        match poll() {
            Output::Transmit(frame) => out.frames.push(frame),
            Output::Event(Event::Authenticated(_)) => out.authenticated = true,
            Output::Event(Event::Ticket(ticket)) => out.ticket = Some(ticket),
            Output::Pending => return out,
        }
    }
}

fn core_error(e: tether_session::HandshakeError) -> BenchError {
    BenchError::setup("in-memory handshake", e)
}

/// Runs one handshake (full, or resumed with `ticket`) to completion on both
/// sides and returns the initiator's next ticket. A full one: the hints
/// answered with the sealed `ServerAuth`, opened, then `ClientAuth` and
/// `Accept`; a resumed one: the responder answers the hints as the driver
/// does (its cost is part of every connection), then `ResumeHello` and
/// `Accept`.
fn handshake(
    phone: &Arc<Credentials>,
    car: &Arc<Credentials>,
    tickets: &Arc<TicketKey>,
    ticket: Option<&ResumptionTicket>,
    round: u64,
    now: u64,
) -> Result<ResumptionTicket, BenchError> {
    let config = HandshakeConfig::default();
    // Exporter, pin, nonces and hint randomness differ per connection in
    // real life; their values do not change the work done.
    let mut exporter = [0x11; 32];
    exporter[..8].copy_from_slice(&round.to_be_bytes());
    let pin = [0x55; 32];
    let mut entropy = [0x22; 32];
    entropy[..8].copy_from_slice(&round.to_be_bytes());
    let mut client = match ticket {
        Some(t) => ClientHandshake::resume(phone.clone(), exporter, [0x22; 32], t),
        None => ClientHandshake::new(phone.clone(), entropy, &config).map_err(core_error)?,
    };
    let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [0x33; 32], &config);
    let sealed = server
        .answer_hints(
            client.hints(),
            &pin,
            &[0x66; tether_session::handshake::ANSWER_ENTROPY_LEN],
            now,
        )
        .map_err(core_error)?;
    server.set_exporter(exporter);
    if ticket.is_none() {
        client
            .handle_server_auth(&sealed, &pin, &exporter, now)
            .map_err(core_error)?;
    }
    let mut to_server = drain(|| client.poll_output()).frames;
    let mut server_done = false;
    let mut next_ticket = None;
    // After the sealed answer: ClientAuth (or ResumeHello), then Accept.
    for _ in 0..3 {
        let mut to_client = Vec::new();
        for frame in to_server.drain(..) {
            server.handle_message(&frame, now).map_err(core_error)?;
            let out = drain(|| server.poll_output());
            server_done |= out.authenticated;
            to_client.extend(out.frames);
        }
        for frame in to_client {
            client.handle_message(&frame, now).map_err(core_error)?;
            let out = drain(|| client.poll_output());
            next_ticket = next_ticket.or(out.ticket);
            to_server.extend(out.frames);
        }
        if server_done
            && to_server.is_empty()
            && let Some(t) = next_ticket
        {
            return Ok(t);
        }
    }
    Err(BenchError::Unexpected("in-memory handshake did not finish"))
}

/// CPU time of the handshake cores, both roles together, averaged over `n`
/// of each kind.
pub(crate) struct CoreCost {
    /// A full handshake between peers that never met.
    pub(crate) full: Duration,
    /// A full handshake (no ticket) between peers whose certificates each
    /// side has verified before.
    pub(crate) known: Duration,
    /// A resumed handshake.
    pub(crate) resumed: Duration,
}

/// Measures [`CoreCost`] over `n` handshakes of each kind.
pub(crate) fn handshake_cost(
    phone: &Arc<Credentials>,
    car: &Arc<Credentials>,
    n: usize,
) -> Result<CoreCost, BenchError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let tickets = Arc::new(TicketKey::new([0x44; 32]));
    let runs = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    let start = std::time::Instant::now();
    let mut ticket = None;
    for round in 0..u64::from(runs) {
        // First contact: neither side has verified the other's certificate.
        phone.peer_certificates().clear();
        car.peer_certificates().clear();
        ticket = Some(handshake(phone, car, &tickets, None, round, now)?);
    }
    let full = start.elapsed() / runs;
    let start = std::time::Instant::now();
    for round in 0..u64::from(runs) {
        handshake(phone, car, &tickets, None, round, now)?;
    }
    let known = start.elapsed() / runs;
    let mut ticket = ticket.ok_or(BenchError::Unexpected("no ticket issued"))?;
    let start = std::time::Instant::now();
    for round in 0..u64::from(runs) {
        ticket = handshake(phone, car, &tickets, Some(&ticket), round, now)?;
    }
    let resumed = start.elapsed() / runs;
    Ok(CoreCost {
        full,
        known,
        resumed,
    })
}
