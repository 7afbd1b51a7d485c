//! The initiator: connects, runs the handshake core (or resumes), then
//! sends requests, each on its own bidirectional stream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use prost::bytes::Bytes;
use tether_identity::Credentials;
use tether_proto::v1::{Envelope, ErrorCode, envelope};
use tokio::sync::watch;
use tokio::time::Instant;

use super::stream::{
    FrameReader, decode_envelope, flush_handshake, write_frame, write_frame_bytes,
};
use super::{
    Bind, CloseCode, SERVER_NAME, SessionConfig, SessionError, exporter, random_nonce, tls,
    unix_now,
};
use crate::handshake::{
    ClientHandshake, Event, GrantAccess, HintEntropy, MAX_HANDSHAKE_MESSAGE_BYTES, Output,
    PeerIdentity, ResumptionTicket, may_travel_early,
};

/// Whose session a ticket resumes: a member's (`None`), or one admitted
/// under the grant with this admission key. A ticket resumes only a
/// session of the same kind, so asking for one grant never yields a
/// session under another (or under membership).
type TicketScope = (SocketAddr, Option<[u8; 32]>);

/// A ticket and the TLS certificate pin it is valid with.
type TicketCache = Arc<Mutex<HashMap<TicketScope, (ResumptionTicket, [u8; 32])>>>;

/// Opens sessions to responders. Keeps resumption tickets per address and
/// admission (membership or a grant), in memory only.
pub struct Connector {
    endpoint: quinn::Endpoint,
    credentials: Arc<Credentials>,
    config: SessionConfig,
    /// The TLS configuration each connection's own (with its hints) is
    /// cloned from.
    tls: rustls::ClientConfig,
    transport: Arc<quinn::TransportConfig>,
    tickets: TicketCache,
    /// TLS tickets per responder and admission, for early data (SPEC §5.8).
    tls_tickets: Arc<Mutex<HashMap<TicketScope, Arc<dyn rustls::client::ClientSessionStore>>>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Connector {
    /// Binds a client UDP socket at `bind` (e.g. `127.0.0.1:0`). Must be
    /// called inside a tokio runtime.
    pub fn new(
        bind: SocketAddr,
        credentials: Arc<Credentials>,
        config: SessionConfig,
    ) -> Result<Self, SessionError> {
        Self::new_on(Bind::Udp(bind), credentials, config)
    }

    /// Opens sessions over a socket the caller made instead of UDP: the
    /// relay transport's (SPEC §19), or any `quinn::AsyncUdpSocket`; the
    /// addresses given to [`Connector::connect`] are that socket's. Must be
    /// called inside a tokio runtime.
    pub fn with_socket(
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        credentials: Arc<Credentials>,
        config: SessionConfig,
    ) -> Result<Self, SessionError> {
        Self::new_on(Bind::Socket(socket), credentials, config)
    }

    fn new_on(
        bind: Bind,
        credentials: Arc<Credentials>,
        config: SessionConfig,
    ) -> Result<Self, SessionError> {
        let tls = tls::client_tls()?;
        let endpoint = super::endpoint_on(bind, None, &config)?;
        Ok(Self {
            endpoint,
            credentials,
            transport: Arc::new(config.client_transport()),
            config,
            tls,
            tickets: Arc::default(),
            tls_tickets: Arc::default(),
        })
    }

    /// Forgets every resumption ticket, Tether's and TLS's.
    pub fn forget_tickets(&self) {
        lock(&self.tickets).clear();
        lock(&self.tls_tickets).clear();
    }

    /// Whether a ticket is held for `addr`.
    pub fn has_ticket(&self, addr: SocketAddr) -> bool {
        lock(&self.tickets).keys().any(|(a, _)| *a == addr)
    }

    /// Opens a QUIC connection and runs no handshake: what a non-member or
    /// a broken client can do. For tests of the responder's defences only.
    #[doc(hidden)]
    pub async fn connect_unauthenticated(
        &self,
        addr: SocketAddr,
    ) -> Result<quinn::Connection, SessionError> {
        self.connect_offering(addr, &[]).await
    }

    /// Opens a QUIC connection offering exactly these hints and runs no
    /// handshake: what a stranger (random hints) or a replayer (someone
    /// else's) can do. For tests of the responder only.
    #[doc(hidden)]
    pub async fn connect_offering(
        &self,
        addr: SocketAddr,
        hints: &[crate::handshake::Hint],
    ) -> Result<quinn::Connection, SessionError> {
        let config = tls::client_config_with(&self.tls, hints, &self.transport, None)?;
        let connecting = self.endpoint.connect_with(config, addr, SERVER_NAME)?;
        connecting.await.map_err(SessionError::from_connection)
    }

    /// Opens a QUIC connection offering exactly these hints, runs no
    /// handshake, and tells whether the responder's TLS ticket arrived
    /// within `wait` (SPEC §5.8: only a connection whose hint it recognised
    /// gets one). For tests of the responder only.
    #[doc(hidden)]
    pub async fn tls_ticket_offered(
        &self,
        addr: SocketAddr,
        hints: &[crate::handshake::Hint],
        wait: Duration,
    ) -> Result<bool, SessionError> {
        let store = Arc::new(rustls::client::ClientSessionMemoryCache::new(4));
        let config =
            tls::client_config_with(&self.tls, hints, &self.transport, Some(store.clone()))?;
        let conn = self
            .endpoint
            .connect_with(config, addr, SERVER_NAME)?
            .await
            .map_err(SessionError::from_connection)?;
        let name = rustls::pki_types::ServerName::try_from(SERVER_NAME)
            .map_err(|e| SessionError::Tls(e.to_string()))?;
        let give_up = Instant::now() + wait;
        let held = loop {
            use rustls::client::ClientSessionStore;
            if store.take_tls13_ticket(&name).is_some() {
                break true;
            }
            if Instant::now() >= give_up {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        conn.close(0u32.into(), b"probe");
        Ok(held)
    }

    /// Connects as a co-user admitted by a share grant (SPEC §17.3): the
    /// full handshake proves the grant's admission key and checks the car's
    /// certificate under the owner's authority. Tickets from such a session
    /// resume only while the grant stands.
    pub async fn connect_with_grant(
        &self,
        addr: SocketAddr,
        access: &GrantAccess,
    ) -> Result<ClientSession, SessionError> {
        self.connect_as(addr, Some(access)).await
    }

    /// Connects and authenticates. Resumes when a ticket for `addr` is held
    /// and the responder's TLS certificate matches its pin; otherwise runs
    /// the full handshake. Returns as soon as requests may be sent.
    pub async fn connect(&self, addr: SocketAddr) -> Result<ClientSession, SessionError> {
        self.connect_as(addr, None).await
    }

    /// The TLS ticket store for `scope`: each responder's tickets apart, as
    /// every responder has the same constant name (SPEC §5.8).
    fn tls_tickets(&self, scope: TicketScope) -> Arc<dyn rustls::client::ClientSessionStore> {
        lock(&self.tls_tickets)
            .entry(scope)
            .or_insert_with(|| Arc::new(rustls::client::ClientSessionMemoryCache::new(4)))
            .clone()
    }

    async fn connect_as(
        &self,
        addr: SocketAddr,
        grant: Option<&GrantAccess>,
    ) -> Result<ClientSession, SessionError> {
        let deadline = Instant::now() + self.config.handshake_timeout;
        let mut entropy: HintEntropy = [0; _];
        super::fill_random(&mut entropy)?;
        // The hints are offered whether or not a ticket is held: whether it
        // resumes is known only once the TLS certificate is (SPEC §5.5).
        let core = match grant {
            Some(access) => ClientHandshake::with_grant(
                self.credentials.clone(),
                access,
                entropy,
                &self.config.handshake,
            ),
            None => {
                ClientHandshake::new(self.credentials.clone(), entropy, &self.config.handshake)?
            }
        };
        let scope = (addr, grant.map(|g| g.admission_key));
        let client_config = tls::client_config_with(
            &self.tls,
            core.hints(),
            &self.transport,
            Some(self.tls_tickets(scope)),
        )?;
        let mut connecting = self
            .endpoint
            .connect_with(client_config, addr, SERVER_NAME)?;
        // A Tether ticket for this responder, not expired, of a responder
        // not removed from the account (SPEC §3.6).
        let held = lock(&self.tickets).remove(&scope).filter(|(t, _)| {
            t.not_after > unix_now() && !self.credentials.is_revoked(&t.peer.public_key)
        });
        // SPEC §5.8: with a TLS ticket of this responder too, resume in
        // early data at once.
        if let Some(held) = held.clone() {
            match connecting.into_0rtt() {
                Ok((conn, accepted)) => {
                    return self.early(conn, accepted, scope, held, core).await;
                }
                Err(back) => connecting = back,
            }
        }
        let conn = tokio::time::timeout_at(deadline, connecting)
            .await
            .map_err(|_| SessionError::HandshakeTimeout)?
            .map_err(SessionError::from_connection)?;
        let auth = self.auth();
        let result = tokio::time::timeout_at(deadline, auth.authenticate(&conn, scope, core, held))
            .await
            .map_err(|_| SessionError::HandshakeTimeout);
        self.session_or_close(conn, result)
    }

    /// The session once authenticated, or the connection closed with the
    /// failure's code (1 refused, 2 timeout).
    fn session_or_close(
        &self,
        conn: quinn::Connection,
        result: Result<Result<(PeerIdentity, u32), SessionError>, SessionError>,
    ) -> Result<ClientSession, SessionError> {
        match result {
            Ok(Ok((peer, round_trips))) => Ok(ClientSession {
                conn,
                peer,
                round_trips,
                config: self.config.clone(),
                next_id: AtomicU64::new(1),
                early: None,
                again: Arc::default(),
            }),
            Ok(Err(e)) => {
                conn.close((CloseCode::Refused as u32).into(), b"handshake failed");
                Err(e)
            }
            Err(e) => {
                conn.close(
                    (CloseCode::HandshakeTimeout as u32).into(),
                    b"handshake timeout",
                );
                Err(e)
            }
        }
    }

    fn auth(&self) -> Auth {
        Auth {
            credentials: self.credentials.clone(),
            tickets: self.tickets.clone(),
            deadline: self.config.handshake_timeout,
        }
    }

    /// An early resumption (SPEC §5.8): the `ResumeHello` and any read go in
    /// 0-RTT data, the session is returned before the TLS handshake
    /// completes. Once it has, the next ticket is kept; if the responder
    /// refused the early data, the session authenticates again on the same
    /// connection (resumed or full, as for any connection).
    async fn early(
        &self,
        conn: quinn::Connection,
        accepted: quinn::ZeroRttAccepted,
        scope: TicketScope,
        held: (ResumptionTicket, [u8; 32]),
        fallback: ClientHandshake,
    ) -> Result<ClientSession, SessionError> {
        let (ticket, pin) = held.clone();
        let mut core =
            ClientHandshake::resume_early(self.credentials.clone(), random_nonce()?, &ticket);
        let auth = self.auth();
        let sent = async {
            let (mut send, recv) = conn
                .open_bi()
                .await
                .map_err(SessionError::from_connection)?;
            let peer = flush_handshake(|| core.poll_output(), &mut send)
                .await?
                .ok_or(SessionError::InvalidMessage(
                    "early resumption queued no peer",
                ))?;
            let _ = send.finish();
            Ok::<_, SessionError>((recv, peer))
        }
        .await;
        let (recv, peer) = match sent {
            Ok(sent) => sent,
            // The responder refused the early data before the ResumeHello
            // had left (a fast link): authenticate in 1-RTT now, as the
            // background below would have.
            Err(e) if e.is_early_data_rejected() => {
                let again = tokio::time::timeout(auth.deadline, async {
                    accepted.await;
                    auth.authenticate(&conn, scope, fallback, Some(held)).await
                })
                .await
                .map_err(|_| SessionError::HandshakeTimeout);
                return self.session_or_close(conn, again);
            }
            Err(e) => {
                conn.close((CloseCode::Refused as u32).into(), b"handshake failed");
                return Err(e);
            }
        };
        let (state_tx, state_rx) = watch::channel(Early::Pending);
        let expected = peer.certificate.public_key;
        let background = conn.clone();
        let again: Arc<std::sync::OnceLock<PeerIdentity>> = Arc::default();
        let fallback_peer = again.clone();
        tokio::spawn(async move {
            let conn = background;
            let was_accepted = accepted.await;
            if conn.close_reason().is_some() {
                let _ = state_tx.send(Early::Failed);
                return;
            }
            if was_accepted {
                let _ = state_tx.send(Early::Confirmed);
                let Ok(exporter) = exporter(&conn) else {
                    return;
                };
                core.set_exporter(&exporter);
                let new_pin = tls::peer_certificate_pin(&conn).unwrap_or(pin);
                let mut reader = FrameReader::new(recv, MAX_HANDSHAKE_MESSAGE_BYTES);
                read_tickets(&mut reader, &mut core, &auth.tickets, scope, new_pin).await;
                return;
            }
            // Refused early data (a responder that restarted, say): its
            // streams are gone; authenticate again, in 1-RTT.
            let again = tokio::time::timeout(
                auth.deadline,
                auth.authenticate(&conn, scope, fallback, Some(held)),
            )
            .await;
            match again {
                Ok(Ok((peer, _))) if peer.certificate.public_key == expected => {
                    // Before the state changes, so that whoever sees it
                    // confirmed sees this peer.
                    let _ = fallback_peer.set(peer);
                    let _ = state_tx.send(Early::Confirmed);
                }
                _ => {
                    conn.close((CloseCode::Refused as u32).into(), b"handshake failed");
                    let _ = state_tx.send(Early::Failed);
                }
            }
        });
        Ok(ClientSession {
            conn,
            peer,
            round_trips: 0,
            config: self.config.clone(),
            next_id: AtomicU64::new(1),
            early: Some(state_rx),
            again,
        })
    }
}

/// Where an early (0-RTT) session stands (SPEC §5.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Early {
    /// The TLS handshake is not complete: only reads may go.
    Pending,
    /// Complete, and the session authenticated.
    Confirmed,
    /// The connection closed, or authenticating again failed.
    Failed,
}

/// What authenticating a connection needs, apart from the connector.
#[derive(Clone)]
struct Auth {
    credentials: Arc<Credentials>,
    tickets: TicketCache,
    deadline: Duration,
}

impl Auth {
    /// Authenticates `conn` once its TLS handshake is complete: resumes
    /// with `held` if the responder's TLS certificate matches its pin (SPEC
    /// §5.5), else runs the full handshake of `core` with the sealed
    /// `ServerAuth`. Returns the peer and the round trips counted.
    async fn authenticate(
        &self,
        conn: &quinn::Connection,
        scope: TicketScope,
        mut core: ClientHandshake,
        held: Option<(ResumptionTicket, [u8; 32])>,
    ) -> Result<(PeerIdentity, u32), SessionError> {
        let exporter = exporter(conn)?;
        let pin = tls::peer_certificate_pin(conn);
        // SPEC §5.5: resume only over the TLS certificate the responder bound
        // to the earlier full handshake, so requests may follow at once.
        let ticket = held.filter(|(_, p)| Some(*p) == pin);
        match (&ticket, pin) {
            (Some((t, _)), _) => {
                core =
                    ClientHandshake::resume(self.credentials.clone(), exporter, random_nonce()?, t);
            }
            (None, Some(pin)) => {
                // The sealed ServerAuth came with the responder's TLS flight.
                let uni = conn
                    .accept_uni()
                    .await
                    .map_err(SessionError::from_connection)?;
                let mut reader = FrameReader::new(uni, MAX_HANDSHAKE_MESSAGE_BYTES);
                let sealed = match reader.next().await {
                    Ok(Some(frame)) => frame,
                    Ok(None) => {
                        return Err(SessionError::InvalidMessage("no ServerAuth"));
                    }
                    Err(SessionError::Read(quinn::ReadError::ConnectionLost(e))) => {
                        return Err(SessionError::from_connection(e));
                    }
                    Err(e) => return Err(e),
                };
                // The ClientAuth leaves first; the responder's signatures
                // are verified while it travels, before any request
                // (SPEC §5.3).
                core.open_server_auth(&sealed, &pin, &exporter, unix_now())?;
            }
            (None, None) => {
                return Err(SessionError::InvalidMessage("no TLS certificate"));
            }
        }
        let (mut send, recv) = conn
            .open_bi()
            .await
            .map_err(SessionError::from_connection)?;
        let mut reader = FrameReader::new(recv, MAX_HANDSHAKE_MESSAGE_BYTES);
        let peer = loop {
            if let Some(peer) = flush_handshake(|| core.poll_output(), &mut send).await? {
                break peer;
            }
            if core.awaits_verification() {
                core.verify_responder(unix_now())?;
                continue;
            }
            let frame = match reader.next().await {
                Ok(Some(frame)) => frame,
                Ok(None) => return Err(SessionError::InvalidMessage("handshake stream ended")),
                Err(SessionError::Read(quinn::ReadError::ConnectionLost(e))) => {
                    return Err(SessionError::from_connection(e));
                }
                Err(e) => return Err(e),
            };
            core.handle_message(&frame, unix_now())?;
        };
        let _ = send.finish();
        let round_trips = 1 + core.flights_waited();
        // The Accept (with the next ticket) arrives in the background while
        // the caller already sends requests.
        if let Some(pin) = pin {
            let tickets = self.tickets.clone();
            tokio::spawn(async move {
                read_tickets(&mut reader, &mut core, &tickets, scope, pin).await;
            });
        }
        Ok((peer, round_trips))
    }
}

/// Reads the responder's `Accept` on stream 0 and keeps its ticket.
async fn read_tickets(
    reader: &mut FrameReader,
    core: &mut ClientHandshake,
    tickets: &TicketCache,
    scope: TicketScope,
    pin: [u8; 32],
) {
    while let Ok(Some(frame)) = reader.next().await {
        if core.handle_message(&frame, unix_now()).is_err() {
            break;
        }
        loop {
            match core.poll_output() {
                Output::Event(Event::Ticket(ticket)) => {
                    lock(tickets).insert(scope, (ticket, pin));
                }
                Output::Pending => break,
                Output::Event(_) | Output::Transmit(_) => {}
            }
        }
    }
}

/// An authenticated session on the initiator's side. Cheap to share
/// behind an `Arc`; every request runs on its own stream.
pub struct ClientSession {
    conn: quinn::Connection,
    peer: PeerIdentity,
    round_trips: u32,
    config: SessionConfig,
    next_id: AtomicU64,
    /// On an early session (SPEC §5.8): where its TLS handshake stands.
    early: Option<watch::Receiver<Early>>,
    /// On an early session whose early data the responder refused: the
    /// peer as the handshake run again on the connection authenticated it.
    again: Arc<std::sync::OnceLock<PeerIdentity>>,
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl ClientSession {
    /// Who is on the other end. On a session that began in early data
    /// (SPEC §5.8) it is the resumed peer until the responder refused the
    /// early data and the session authenticated again on the connection
    /// (same responder key, required): from then on it is the peer as that
    /// handshake authenticated it (`resumed` false after a full one).
    /// [`ClientSession::is_early`] turns false either way.
    pub fn peer(&self) -> &PeerIdentity {
        self.again.get().unwrap_or(&self.peer)
    }

    /// Round trips before the first request could be sent: 1 for QUIC's
    /// own handshake plus the handshake core's counted flights, or 0 for a
    /// session begun in early data (SPEC §5.6, §5.8).
    pub fn round_trips(&self) -> u32 {
        self.round_trips
    }

    /// QUIC path statistics (RTT, packets), for the demo and benchmarks.
    pub fn stats(&self) -> quinn::ConnectionStats {
        self.conn.stats()
    }

    /// Sends a request on a new stream. A `request_id` of 0 is replaced by
    /// the next free id. The stream yields the responses.
    pub async fn request(&self, mut envelope: Envelope) -> Result<ResponseStream, SessionError> {
        self.ready_for(may_travel_early(&envelope)).await?;
        if envelope.request_id == 0 {
            envelope.request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        }
        let deadline = match envelope.deadline_ms {
            0 => self.config.default_deadline,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let bytes = envelope.encode_to_vec();
        let (mut send, responses) = self
            .send_frame(&bytes, envelope.request_id, deadline)
            .await?;
        let _ = send.finish();
        Ok(responses)
    }

    /// Sends a request whose body follows it on the same stream (SPEC
    /// §6.2): sets `body_follows`, sends the envelope, and returns the
    /// writer of the body with the stream of responses. The responder may
    /// answer while the body is still being sent. A `request_id` of 0 is
    /// replaced by the next free id; the deadline bounds the first response.
    pub async fn request_with_body(
        &self,
        mut envelope: Envelope,
    ) -> Result<(BodyWriter, ResponseStream), SessionError> {
        // A body is never early data.
        self.ready_for(false).await?;
        if envelope.request_id == 0 {
            envelope.request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        }
        envelope.body_follows = true;
        let deadline = match envelope.deadline_ms {
            0 => self.config.default_deadline,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let bytes = envelope.encode_to_vec();
        let (send, responses) = self
            .send_frame(&bytes, envelope.request_id, deadline)
            .await?;
        let writer = BodyWriter {
            send: Some(send),
            limit: self.config.max_frame_bytes,
        };
        Ok((writer, responses))
    }

    /// Sends a request and returns its first response; an error envelope
    /// becomes [`SessionError::Remote`].
    pub async fn call(&self, envelope: Envelope) -> Result<Envelope, SessionError> {
        match self.call_once(envelope.clone()).await {
            // A read sent as early data that the responder refused (SPEC
            // §5.8): nothing was executed; once the session has
            // authenticated again it goes once more, in 1-RTT.
            Err(e) if e.is_early_data_rejected() && self.early.is_some() => {
                self.ready_for(false).await?;
                self.call_once(envelope).await
            }
            other => other,
        }
    }

    /// Sends a request once the session is past its early data (SPEC
    /// §5.8): what a reader does when the responder refused the early
    /// request it sent (a subscription opened early, whose stream reported
    /// [`SessionError::is_early_data_rejected`]). Nothing of the refused
    /// request was executed. On a session that never was early, the same
    /// as [`ClientSession::request`].
    pub async fn request_after_early(
        &self,
        envelope: Envelope,
    ) -> Result<ResponseStream, SessionError> {
        self.ready_for(false).await?;
        self.request(envelope).await
    }

    async fn call_once(&self, envelope: Envelope) -> Result<Envelope, SessionError> {
        let mut stream = self.request(envelope).await?;
        let first = stream.next().await?.ok_or(SessionError::InvalidMessage(
            "stream ended without a response",
        ))?;
        // If the end of the stream is already buffered, consume it so that
        // dropping the stream sends no STOP_SENDING; never wait for it.
        // (tokio's timeout polls the inner future once before the timer.)
        let _ = tokio::time::timeout(Duration::ZERO, stream.next()).await;
        Ok(first)
    }

    /// Whether this session began in early data (SPEC §5.8) and its TLS
    /// handshake is not complete yet.
    pub fn is_early(&self) -> bool {
        self.early
            .as_ref()
            .is_some_and(|e| *e.borrow() == Early::Pending)
    }

    /// Waits, on an early session whose TLS handshake is not complete, until
    /// it is — unless `early_ok` (an idempotent read, SPEC §5.8). Fails if
    /// the session could not authenticate after refused early data.
    async fn ready_for(&self, early_ok: bool) -> Result<(), SessionError> {
        let Some(early) = &self.early else {
            return Ok(());
        };
        if early_ok && *early.borrow() == Early::Pending {
            return Ok(());
        }
        let mut early = early.clone();
        let state = *early
            .wait_for(|s| *s != Early::Pending)
            .await
            .map_err(|_| SessionError::InvalidMessage("early session dropped"))?;
        match state {
            Early::Confirmed | Early::Pending => Ok(()),
            Early::Failed => Err(match self.conn.close_reason() {
                Some(reason) => SessionError::from_connection(reason),
                None => {
                    SessionError::Handshake(crate::handshake::HandshakeError::ResumptionRefused)
                }
            }),
        }
    }

    /// Sends raw payload bytes as one frame, skipping the local size check.
    /// For tests of the responder's limits only.
    #[doc(hidden)]
    pub async fn request_unchecked(&self, payload: &[u8]) -> Result<ResponseStream, SessionError> {
        let (mut send, recv) = self
            .conn
            .open_bi()
            .await
            .map_err(SessionError::from_connection)?;
        send.write_all(&crate::frame::encode_frame(payload)).await?;
        let _ = send.finish();
        Ok(ResponseStream::new(
            recv,
            self.config.max_frame_bytes,
            0,
            self.config.default_deadline,
        ))
    }

    /// Opens a stream and sends one frame on it; the send side stays open.
    async fn send_frame(
        &self,
        bytes: &[u8],
        request_id: u64,
        deadline: Duration,
    ) -> Result<(quinn::SendStream, ResponseStream), SessionError> {
        let limit = self.config.max_frame_bytes;
        if bytes.len() > limit {
            return Err(SessionError::MessageTooLarge {
                len: bytes.len(),
                limit,
            });
        }
        // Waits here when the peer's stream limit is reached (backpressure).
        let (mut send, recv) = self
            .conn
            .open_bi()
            .await
            .map_err(SessionError::from_connection)?;
        write_frame(&mut send, bytes, limit).await?;
        Ok((send, ResponseStream::new(recv, limit, request_id, deadline)))
    }

    /// Closes the session with a code and a reason (no identifiers).
    pub fn close(&self, code: CloseCode, reason: &str) {
        self.conn.close((code as u32).into(), reason.as_bytes());
    }

    /// Whether the session has closed (either side, or the transport).
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    /// Resolves when the connection closes, with why.
    pub async fn closed(&self) -> SessionError {
        SessionError::from_connection(self.conn.closed().await)
    }
}

/// The body of a request sent with [`ClientSession::request_with_body`]:
/// frames of raw bytes after the request on its stream (SPEC §6.2).
///
/// Call [`BodyWriter::send`] for each frame, then [`BodyWriter::finish`].
/// Dropping it unfinished resets the stream, so the responder sees the
/// body abandoned rather than complete.
pub struct BodyWriter {
    /// `None` once finished.
    send: Option<quinn::SendStream>,
    limit: usize,
}

impl std::fmt::Debug for BodyWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyWriter")
            .field("finished", &self.send.is_none())
            .finish_non_exhaustive()
    }
}

impl BodyWriter {
    /// The largest frame [`BodyWriter::send`] accepts: this endpoint's
    /// `max_frame_bytes` (SPEC §6.1).
    pub fn max_frame_bytes(&self) -> usize {
        self.limit
    }

    /// Sends `payload` as one frame, handed to QUIC without a copy. Waits
    /// while QUIC's flow control holds the stream back. A payload over
    /// [`BodyWriter::max_frame_bytes`] is refused with
    /// [`SessionError::MessageTooLarge`] and nothing is sent. Fails with
    /// [`SessionError::Write`] once the responder stopped reading (it may
    /// have answered why on the response stream).
    pub async fn send(&mut self, payload: Bytes) -> Result<(), SessionError> {
        let send = self.send.as_mut().ok_or(SessionError::StreamClosed)?;
        match write_frame_bytes(send, payload, self.limit).await {
            Err(SessionError::Write(quinn::WriteError::ConnectionLost(e))) => {
                Err(SessionError::from_connection(e))
            }
            other => other,
        }
    }

    /// Ends the body: the responder reads a clean end of stream.
    pub fn finish(mut self) {
        if let Some(mut send) = self.send.take() {
            let _ = send.finish();
        }
    }
}

impl Drop for BodyWriter {
    fn drop(&mut self) {
        if let Some(mut send) = self.send.take() {
            // An unfinished body is abandoned, not complete (quinn would
            // finish a dropped stream).
            let _ = send.reset(0u32.into());
        }
    }
}

/// Responses to one request. Dropping it cancels the request (the
/// responder sees its stream stopped).
pub struct ResponseStream {
    reader: FrameReader,
    request_id: u64,
    first_deadline: Option<Instant>,
}

impl std::fmt::Debug for ResponseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStream")
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl ResponseStream {
    fn new(recv: quinn::RecvStream, limit: usize, request_id: u64, deadline: Duration) -> Self {
        Self {
            reader: FrameReader::new(recv, limit),
            request_id,
            first_deadline: Some(Instant::now() + deadline),
        }
    }

    /// The request's id.
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// Whether the request's stream was opened in TLS 0-RTT early data
    /// (SPEC §5.8).
    pub fn was_early(&self) -> bool {
        self.reader.is_0rtt()
    }

    /// The next response; `Ok(None)` when the responder finished the stream.
    /// The request's deadline bounds the wait for the first response.
    pub async fn next(&mut self) -> Result<Option<Envelope>, SessionError> {
        let frame = match self.first_deadline.take() {
            Some(deadline) => tokio::time::timeout_at(deadline, self.reader.next())
                .await
                .map_err(|_| SessionError::DeadlineExceeded)?,
            None => self.reader.next().await,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(None),
            Err(SessionError::Read(quinn::ReadError::ConnectionLost(e))) => {
                return Err(SessionError::from_connection(e));
            }
            Err(e) => return Err(e),
        };
        let envelope = decode_envelope(&frame)?;
        if let Some(envelope::Body::Error(e)) = &envelope.body {
            return Err(SessionError::Remote {
                code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified),
                message: e.message.clone(),
            });
        }
        Ok(Some(envelope))
    }

    /// Stops the stream (cancels a subscription).
    pub fn cancel(mut self) {
        self.reader.stop();
    }
}
