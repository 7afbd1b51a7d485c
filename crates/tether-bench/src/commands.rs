//! Small commands on an established session: sequential round trips and
//! many in flight, Tether against the bare echo.

use std::sync::Arc;
use std::time::Duration;

use tether_identity::DeviceKey;
use tether_session::quic::{CloseCode, Connector, Listener, SessionConfig};

use crate::config::{share, tether_first};
use crate::error::BenchError;
use crate::measure::{latencies, pipelined};
use crate::tether::LOOPBACK;
use crate::{BenchConfig, bare, tether};

/// Samples and throughput of the small-command measurements.
pub(crate) struct Commands {
    pub(crate) tether_rtt: Vec<Duration>,
    pub(crate) bare_rtt: Vec<Duration>,
    pub(crate) tether_pipelined: (usize, Duration),
    pub(crate) bare_pipelined: (usize, Duration),
}

/// Aborts a server task when the measurement ends, however it ends.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) async fn measure_commands(
    config: &BenchConfig,
    account: &tether::Account,
    session_config: &SessionConfig,
) -> Result<Commands, BenchError> {
    let listener = Listener::bind(LOOPBACK, account.car.clone(), session_config.clone())?;
    let addr = listener.local_addr()?;
    let car_key = DeviceKey::from_pkcs8(account.car.key().pkcs8())
        .map_err(|e| BenchError::setup("vehicle key", e))?;
    let _vehicle =
        AbortOnDrop(tokio::spawn(tether::serve_vehicle(listener, car_key)).abort_handle());
    let bare_server = bare::server(session_config)?;
    let bare_addr = bare_server
        .local_addr()
        .map_err(|e| BenchError::setup("baseline socket", e))?;
    let _echo = AbortOnDrop(tokio::spawn(bare::serve_echo(bare_server)).abort_handle());

    let connector = Connector::new(LOOPBACK, account.phone.clone(), session_config.clone())?;
    let session = Arc::new(connector.connect(addr).await?);
    let bare_client = bare::Client::new(session_config)?;
    let conn = bare_client.connect(bare_addr).await?;

    let tether_call = {
        let session = session.clone();
        move || {
            let session = session.clone();
            async move { tether::call(&session).await }
        }
    };
    let bare_call = {
        let conn = conn.clone();
        move || {
            let conn = conn.clone();
            async move { bare::echo(&conn).await }
        }
    };

    let mut out = Commands {
        tether_rtt: Vec::with_capacity(config.rtt_samples),
        bare_rtt: Vec::with_capacity(config.rtt_samples),
        tether_pipelined: (0, Duration::ZERO),
        bare_pipelined: (0, Duration::ZERO),
    };

    // Sequential round trips.
    latencies(config.rtt_warmup, 0, &tether_call).await?;
    latencies(config.rtt_warmup, 0, &bare_call).await?;
    for round in 0..config.rounds {
        let n = share(config.rtt_samples, round, config.rounds);
        for tether_turn in [tether_first(round), !tether_first(round)] {
            if tether_turn {
                out.tether_rtt.extend(latencies(0, n, &tether_call).await?);
            } else {
                out.bare_rtt.extend(latencies(0, n, &bare_call).await?);
            }
        }
    }

    // Many in flight on one session / connection.
    let concurrency = config.pipelined_concurrency;
    let warmup = concurrency * 2;
    pipelined(concurrency, warmup, tether_call.clone()).await?;
    pipelined(concurrency, warmup, bare_call.clone()).await?;
    for round in 0..config.rounds {
        let n = share(config.pipelined_requests, round, config.rounds);
        for tether_turn in [tether_first(round), !tether_first(round)] {
            let (done, time) = if tether_turn {
                pipelined(concurrency, n, tether_call.clone()).await?
            } else {
                pipelined(concurrency, n, bare_call.clone()).await?
            };
            let total = if tether_turn {
                &mut out.tether_pipelined
            } else {
                &mut out.bare_pipelined
            };
            total.0 += done;
            total.1 += time;
        }
    }

    session.close(CloseCode::Normal, "bench done");
    conn.close(0u32.into(), b"bench done");
    Ok(out)
}
