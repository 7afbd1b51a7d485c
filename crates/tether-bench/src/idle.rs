//! Memory per idle session (issue 19, item 3): the heap that `n` idle,
//! authenticated Tether sessions keep, against `n` idle bare quinn
//! connections with the same TLS and transport settings.
//!
//! Both ends of every session live in this process, so each figure counts
//! the initiator's and the responder's state together. One connection per
//! side is opened and closed first, untimed and uncounted, so that lazy
//! set-up (certificate caches, thread-local buffers) is not a session's.
//! After the `n` are open, the measurement waits [`SETTLE`] for background
//! work (tickets, acknowledgements, handshake streams closing) to finish,
//! then reads the heap's growth ([`crate::heap`]).

use std::time::Duration;

use tether_session::quic::{CloseCode, Connector, Listener, SessionConfig};

use crate::bare;
use crate::error::BenchError;
use crate::heap::HeapWindow;
use crate::tether::{Account, LOOPBACK, handshake, ticket_arrived};

/// How long to let open connections go quiet before reading the heap.
const SETTLE: Duration = Duration::from_millis(200);

/// Heap kept by `n` idle sessions of each kind, bytes, both ends counted.
pub(crate) struct IdleHeap {
    pub(crate) tether_bytes: i64,
    pub(crate) bare_bytes: i64,
}

/// `None` when the counting allocator is not installed.
pub(crate) async fn measure_idle(
    n: usize,
    account: &Account,
    session_config: &SessionConfig,
) -> Result<Option<IdleHeap>, BenchError> {
    if HeapWindow::open().is_none() {
        // Not installed: do not open the sessions for nothing.
        return Ok(None);
    }
    let Some(tether_bytes) = tether_idle(n, account, session_config).await? else {
        return Ok(None);
    };
    let Some(bare_bytes) = bare_idle(n, session_config).await? else {
        return Ok(None);
    };
    Ok(Some(IdleHeap {
        tether_bytes,
        bare_bytes,
    }))
}

async fn tether_idle(
    n: usize,
    account: &Account,
    session_config: &SessionConfig,
) -> Result<Option<i64>, BenchError> {
    let mut listener = Listener::bind(LOOPBACK, account.car.clone(), session_config.clone())?;
    let addr = listener.local_addr()?;
    let connector = Connector::new(LOOPBACK, account.phone.clone(), session_config.clone())?;
    // Untimed, uncounted: first-use state and the first ticket.
    let (_, client, server) = handshake(&connector, &mut listener, addr).await?;
    ticket_arrived(&connector, addr).await?;
    client.close(CloseCode::Normal, "warm-up");
    drop(server);
    tokio::time::sleep(SETTLE).await;

    let Some(window) = HeapWindow::open() else {
        return Ok(None);
    };
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        // Every session a cold one, as a car's phones each connect once.
        connector.forget_tickets();
        let (_, client, server) = handshake(&connector, &mut listener, addr).await?;
        ticket_arrived(&connector, addr).await?;
        sessions.push((client, server));
    }
    tokio::time::sleep(SETTLE).await;
    let bytes = window.growth() as i64;
    drop(window);

    for (client, server) in sessions {
        client.close(CloseCode::Normal, "bench done");
        drop(server);
    }
    listener.close();
    Ok(Some(bytes))
}

async fn bare_idle(n: usize, session_config: &SessionConfig) -> Result<Option<i64>, BenchError> {
    let server = bare::server(session_config)?;
    let addr = server
        .local_addr()
        .map_err(|e| BenchError::setup("baseline socket", e))?;
    let client = bare::Client::new(session_config)?;
    let (c, s) = tokio::try_join!(client.connect(addr), bare::accept(&server))?;
    c.close(0u32.into(), b"warm-up");
    drop(s);
    tokio::time::sleep(SETTLE).await;

    let Some(window) = HeapWindow::open() else {
        return Ok(None);
    };
    let mut connections = Vec::with_capacity(n);
    for _ in 0..n {
        connections.push(tokio::try_join!(
            client.connect(addr),
            bare::accept(&server)
        )?);
    }
    tokio::time::sleep(SETTLE).await;
    let bytes = window.growth() as i64;
    drop(window);

    for (c, s) in connections {
        c.close(0u32.into(), b"bench done");
        drop(s);
    }
    server.close(0u32.into(), b"bench done");
    Ok(Some(bytes))
}
