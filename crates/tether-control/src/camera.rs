//! Consent for remote live view of the in-car camera (R18, R19; SPEC §14).
//!
//! A sans-IO state machine on the head unit: the owner's (or a co-user's)
//! request, the cabin state, the head unit's on-screen answer and the clock
//! go in; decisions, prompts to show, and timer requests come out.
//!
//! The rules:
//! - **Switched off** on the head unit: every request is refused and a live
//!   view in progress stops. Nothing else can switch it back on.
//! - **Judged empty**: sentry mode, parked power-hold or locked, and no
//!   occupant detected. The owner may then view directly. A detected
//!   occupant always overrides the judgement.
//! - **Someone may be inside**: the request waits for a person in the car to
//!   accept on the head unit. A decline, or no answer within
//!   [`CONSENT_TIMEOUT_MS`], refuses it.
//! - A view allowed because the car was empty **stops** when the car stops
//!   being judged empty. A new request would then need consent.
//! - **Co-users** need a share that grants camera view (R19).
//! - **One** live view or pending request at a time.

/// How long a person in the car has to answer the on-screen prompt.
pub const CONSENT_TIMEOUT_MS: u64 = 30_000;

/// What the head unit knows about the cabin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CabinState {
    /// Sentry (guard) mode is on.
    pub sentry_mode: bool,
    /// Parked with power held for a feature (e.g. climate keep).
    pub parked_power_hold: bool,
    /// The doors are locked.
    pub locked: bool,
    /// An occupancy sensor's reading, when the car has one.
    pub occupant_detected: Option<bool>,
}

impl CabinState {
    /// Whether the car is judged empty (R18).
    pub fn judged_empty(&self) -> bool {
        if self.occupant_detected == Some(true) {
            return false;
        }
        self.sentry_mode || self.parked_power_hold || self.locked
    }
}

/// Who asks to view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    /// The account owner.
    Owner,
    /// A co-user; `camera_shared` is whether their share grants camera view.
    CoUser {
        /// The share grants camera view (R19).
        camera_shared: bool,
    },
}

/// Why a view was allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowReason {
    /// The car was judged empty.
    CarEmpty,
    /// A person in the car accepted on the head unit.
    Consented,
}

/// Why a view was refused or stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// The camera is switched off on the head unit.
    CameraOff,
    /// A person in the car declined.
    Declined,
    /// Nobody answered the prompt in time.
    NoAnswer,
    /// A co-user without a camera share.
    NotShared,
    /// Another view or request is in progress.
    Busy,
    /// The car stopped being judged empty during a view allowed for that.
    OccupantPresent,
}

/// What the head unit does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraEvent {
    /// Start streaming for request `id`.
    Allowed {
        /// The request.
        id: u64,
        /// Why.
        reason: AllowReason,
    },
    /// Tell the requester no.
    Refused {
        /// The request.
        id: u64,
        /// Why.
        reason: RefuseReason,
    },
    /// Show the consent prompt on the head unit; call
    /// [`CameraConsent::handle_timeout`] at `deadline_ms`.
    Prompt {
        /// The request.
        id: u64,
        /// When the prompt expires.
        deadline_ms: u64,
    },
    /// Take the prompt down (answered, expired or withdrawn).
    PromptClosed {
        /// The request.
        id: u64,
    },
    /// Stop streaming.
    Stopped {
        /// The request.
        id: u64,
        /// Why.
        reason: RefuseReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Pending { id: u64, deadline_ms: u64 },
    Live { id: u64, reason: AllowReason },
}

/// The consent state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraConsent {
    enabled: bool,
    cabin: CabinState,
    state: State,
}

impl Default for CameraConsent {
    fn default() -> Self {
        Self::new(true, CabinState::default())
    }
}

impl CameraConsent {
    /// A camera that is `enabled` or not, in a cabin in `cabin`.
    pub fn new(enabled: bool, cabin: CabinState) -> Self {
        Self {
            enabled,
            cabin,
            state: State::Idle,
        }
    }

    /// Whether the camera is switched on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The request being streamed, if any.
    pub fn live(&self) -> Option<u64> {
        match self.state {
            State::Live { id, .. } => Some(id),
            _ => None,
        }
    }

    /// A remote request `id` to view.
    pub fn request(&mut self, id: u64, requester: Requester, now_ms: u64) -> Vec<CameraEvent> {
        let refuse = |reason| vec![CameraEvent::Refused { id, reason }];
        if !self.enabled {
            return refuse(RefuseReason::CameraOff);
        }
        if requester
            == (Requester::CoUser {
                camera_shared: false,
            })
        {
            return refuse(RefuseReason::NotShared);
        }
        if self.state != State::Idle {
            return refuse(RefuseReason::Busy);
        }
        if self.cabin.judged_empty() {
            self.state = State::Live {
                id,
                reason: AllowReason::CarEmpty,
            };
            return vec![CameraEvent::Allowed {
                id,
                reason: AllowReason::CarEmpty,
            }];
        }
        let deadline_ms = now_ms.saturating_add(CONSENT_TIMEOUT_MS);
        self.state = State::Pending { id, deadline_ms };
        vec![CameraEvent::Prompt { id, deadline_ms }]
    }

    /// A person in the car answered the prompt for `id` on the head unit.
    /// An answer to a prompt that is no longer shown changes nothing.
    pub fn answer(&mut self, id: u64, accept: bool) -> Vec<CameraEvent> {
        match self.state {
            State::Pending { id: pending, .. } if pending == id => {
                if accept {
                    self.state = State::Live {
                        id,
                        reason: AllowReason::Consented,
                    };
                    vec![
                        CameraEvent::PromptClosed { id },
                        CameraEvent::Allowed {
                            id,
                            reason: AllowReason::Consented,
                        },
                    ]
                } else {
                    self.state = State::Idle;
                    vec![
                        CameraEvent::PromptClosed { id },
                        CameraEvent::Refused {
                            id,
                            reason: RefuseReason::Declined,
                        },
                    ]
                }
            }
            _ => Vec::new(),
        }
    }

    /// Expires a prompt whose deadline passed at `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Vec<CameraEvent> {
        match self.state {
            State::Pending { id, deadline_ms } if now_ms >= deadline_ms => {
                self.state = State::Idle;
                vec![
                    CameraEvent::PromptClosed { id },
                    CameraEvent::Refused {
                        id,
                        reason: RefuseReason::NoAnswer,
                    },
                ]
            }
            _ => Vec::new(),
        }
    }

    /// The cabin changed. A view allowed because the car was empty stops as
    /// soon as it is no longer judged empty.
    pub fn update_cabin(&mut self, cabin: CabinState) -> Vec<CameraEvent> {
        self.cabin = cabin;
        match self.state {
            State::Live {
                id,
                reason: AllowReason::CarEmpty,
            } if !cabin.judged_empty() => {
                self.state = State::Idle;
                vec![CameraEvent::Stopped {
                    id,
                    reason: RefuseReason::OccupantPresent,
                }]
            }
            _ => Vec::new(),
        }
    }

    /// Switches the camera on or off on the head unit. Off ends a live view
    /// and refuses a pending request.
    pub fn set_enabled(&mut self, enabled: bool) -> Vec<CameraEvent> {
        self.enabled = enabled;
        if enabled {
            return Vec::new();
        }
        let events = match self.state {
            State::Idle => Vec::new(),
            State::Pending { id, .. } => vec![
                CameraEvent::PromptClosed { id },
                CameraEvent::Refused {
                    id,
                    reason: RefuseReason::CameraOff,
                },
            ],
            State::Live { id, .. } => vec![CameraEvent::Stopped {
                id,
                reason: RefuseReason::CameraOff,
            }],
        };
        self.state = State::Idle;
        events
    }

    /// The requester ended or withdrew request `id`.
    pub fn end(&mut self, id: u64) -> Vec<CameraEvent> {
        match self.state {
            State::Pending { id: pending, .. } if pending == id => {
                self.state = State::Idle;
                vec![CameraEvent::PromptClosed { id }]
            }
            State::Live { id: live, .. } if live == id => {
                self.state = State::Idle;
                Vec::new()
            }
            _ => Vec::new(),
        }
    }
}
