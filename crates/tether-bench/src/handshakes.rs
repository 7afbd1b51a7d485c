//! Sequential handshakes: cold and resumed Tether, and bare quinn, each
//! timed until both ends hold the connection.

use std::net::SocketAddr;
use std::time::Duration;

use tether_session::quic::{CloseCode, Connector, Listener, SessionConfig};

use crate::config::{share, tether_first};
use crate::error::BenchError;
use crate::tether::LOOPBACK;
use crate::{BenchConfig, bare, tether};

/// Counts and summed times of the handshake loops.
pub(crate) struct Handshakes {
    /// No ticket; each side has verified the other's certificate before.
    pub(crate) tether: (usize, Duration),
    /// No ticket and no certificate verified before.
    pub(crate) first_contact: (usize, Duration),
    pub(crate) resumed: (usize, Duration),
    pub(crate) bare: (usize, Duration),
}

pub(crate) async fn measure_handshakes(
    config: &BenchConfig,
    account: &tether::Account,
    session_config: &SessionConfig,
) -> Result<Handshakes, BenchError> {
    let mut listener = Listener::bind(LOOPBACK, account.car.clone(), session_config.clone())?;
    let addr = listener.local_addr()?;
    let connector = Connector::new(LOOPBACK, account.phone.clone(), session_config.clone())?;
    let bare_server = bare::server(session_config)?;
    let bare_addr = bare_server
        .local_addr()
        .map_err(|e| BenchError::setup("baseline socket", e))?;
    let bare_client = bare::Client::new(session_config)?;

    // One untimed handshake each: first-use costs (thread wake-ups, lazy
    // initialisation) are not handshakes.
    cold_handshakes(1, &connector, &mut listener, addr, None).await?;
    bare_handshakes(1, &bare_client, &bare_server, bare_addr).await?;

    let mut out = Handshakes {
        tether: (0, Duration::ZERO),
        first_contact: (0, Duration::ZERO),
        resumed: (0, Duration::ZERO),
        bare: (0, Duration::ZERO),
    };
    let add = |total: &mut (usize, Duration), n: usize, time: Duration| {
        total.0 += n;
        total.1 += time;
    };
    for round in 0..config.rounds {
        let n = share(config.handshakes, round, config.rounds);
        for tether_turn in [tether_first(round), !tether_first(round)] {
            if tether_turn {
                let time = cold_handshakes(n, &connector, &mut listener, addr, None).await?;
                add(&mut out.tether, n, time);
                let time =
                    cold_handshakes(n, &connector, &mut listener, addr, Some(account)).await?;
                add(&mut out.first_contact, n, time);
                let time = resumed_handshakes(n, &connector, &mut listener, addr).await?;
                add(&mut out.resumed, n, time);
            } else {
                let time = bare_handshakes(n, &bare_client, &bare_server, bare_addr).await?;
                add(&mut out.bare, n, time);
            }
        }
    }
    listener.close();
    bare_server.close(0u32.into(), b"done");
    Ok(out)
}

/// `n` full Tether handshakes; returns their summed time (connect until
/// both ends are authenticated; closing is not timed). With `first_contact`,
/// both ends forget the certificates they verified before each one.
async fn cold_handshakes(
    n: usize,
    connector: &Connector,
    listener: &mut Listener,
    addr: SocketAddr,
    first_contact: Option<&tether::Account>,
) -> Result<Duration, BenchError> {
    let mut total = Duration::ZERO;
    for _ in 0..n {
        connector.forget_tickets();
        if let Some(account) = first_contact {
            account.phone.peer_certificates().clear();
            account.car.peer_certificates().clear();
        }
        let (time, client, server) = tether::handshake(connector, listener, addr).await?;
        if client.peer().resumed {
            return Err(BenchError::Unexpected("a cold handshake resumed"));
        }
        total += time;
        // The ticket from this handshake arrives in the background; wait
        // for it so that it cannot land after the next forget_tickets and
        // turn the next cold handshake into a resumption.
        tether::ticket_arrived(connector, addr).await?;
        client.close(CloseCode::Normal, "bench");
        drop(server);
    }
    Ok(total)
}

/// `n` resumed Tether handshakes, each with the ticket from the previous
/// one. A ticket must be held on entry; one is held on return.
async fn resumed_handshakes(
    n: usize,
    connector: &Connector,
    listener: &mut Listener,
    addr: SocketAddr,
) -> Result<Duration, BenchError> {
    let mut total = Duration::ZERO;
    for _ in 0..n {
        let (time, client, server) = tether::handshake(connector, listener, addr).await?;
        if !client.peer().resumed {
            return Err(BenchError::Unexpected(
                "a handshake with a ticket did not resume",
            ));
        }
        total += time;
        // The next ticket comes with this session's Accept: wait for it
        // before closing the connection it travels on.
        tether::ticket_arrived(connector, addr).await?;
        client.close(CloseCode::Normal, "bench");
        drop(server);
    }
    Ok(total)
}

/// `n` bare quinn handshakes; returns their summed time (connect until both
/// ends hold the connection; closing is not timed).
async fn bare_handshakes(
    n: usize,
    client: &bare::Client,
    server: &quinn::Endpoint,
    addr: SocketAddr,
) -> Result<Duration, BenchError> {
    let mut total = Duration::ZERO;
    for _ in 0..n {
        let start = tokio::time::Instant::now();
        let (client_conn, server_conn) =
            tokio::try_join!(client.connect(addr), bare::accept(server))?;
        total += start.elapsed();
        client_conn.close(0u32.into(), b"bench");
        drop(server_conn);
    }
    Ok(total)
}
