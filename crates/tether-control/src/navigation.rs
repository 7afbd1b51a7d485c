//! Navigation hand-off between the owner's phone and the car (R5, R32;
//! SPEC §21, issue 16 item 2, first part): the head unit's state machine.
//! Sans-IO: time comes in as `now_ms`, positions as arguments, and what the
//! phones should hear comes out of [`Navigation::poll_event`]; no clock, no
//! store, no network.
//!
//! - Phone → car: a destination arrives as an **offer**; the car shows it
//!   and starts guidance only when the driver accepts it on the head unit.
//!   An offer nobody answers expires.
//! - Car → phone: when the car parks short of the destination it is guiding
//!   to (farther than [`ARRIVED_WITHIN_M`], closer than [`WALK_AT_MOST_M`]),
//!   the rest of the way goes to the owner's phone as a walk. Parked on it,
//!   guidance ends as arrived; parked far from it (a stop on the way),
//!   guidance goes on.
//!
//! The car keeps only the destinations it was given and the one it guides
//! to; a parked position is used once, for the hand-off, and not kept: no
//! track (R32).

use std::collections::VecDeque;

/// An offer not accepted or declined within this long is dropped.
pub const OFFER_TTL_MS: u64 = 5 * 60 * 1000;
/// Offers held at once; one more is refused.
pub const MAX_PENDING_OFFERS: usize = 4;
/// Waypoints in one destination, at most.
pub const MAX_WAYPOINTS: usize = 8;
/// A place's name, at most (bytes of UTF-8).
pub const MAX_NAME_BYTES: usize = 64;
/// Parked this close to the destination counts as arrived (metres).
pub const ARRIVED_WITHIN_M: f64 = 30.0;
/// Parked farther than this from the destination is a stop on the way, not
/// the end: no walk is handed off (metres).
pub const WALK_AT_MOST_M: f64 = 2_000.0;

/// A point, in degrees (WGS 84).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    /// Latitude, −90..=90.
    pub lat: f64,
    /// Longitude, −180..=180.
    pub lon: f64,
}

impl Position {
    fn is_valid(&self) -> bool {
        self.lat.is_finite()
            && self.lon.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon)
    }

    /// Great-circle distance in metres (haversine, mean Earth radius).
    pub fn distance_m(&self, other: &Position) -> f64 {
        const EARTH_RADIUS_M: f64 = 6_371_008.8;
        let (p1, p2) = (self.lat.to_radians(), other.lat.to_radians());
        let dp = p2 - p1;
        let dl = (other.lon - self.lon).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
    }
}

/// A named place.
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    /// What the user called it.
    pub name: String,
    /// Where it is.
    pub position: Position,
}

/// Where the phone asks the car to go, with optional stops on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    /// The end of the trip.
    pub place: Place,
    /// Stops before it, in order.
    pub waypoints: Vec<Place>,
}

/// An offer's number on this head unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OfferId(pub u64);

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NavigationError {
    /// A coordinate out of range or not a number, an empty or too long
    /// name, too many waypoints.
    #[error("invalid destination: {0}")]
    Invalid(&'static str),
    /// [`MAX_PENDING_OFFERS`] offers are waiting already.
    #[error("too many destinations waiting for the driver")]
    Busy,
    /// No offer with this number is waiting (answered, expired or unknown).
    #[error("no destination {0} is waiting")]
    NoSuchOffer(u64),
}

/// What the owner's phones hear.
#[derive(Debug, Clone, PartialEq)]
pub enum NavigationEvent {
    /// The car shows the destination and waits for the driver.
    Offered(OfferId),
    /// The driver accepted: guidance to it started.
    Accepted(OfferId),
    /// The driver declined it.
    Declined(OfferId),
    /// Nobody answered within [`OFFER_TTL_MS`].
    Expired(OfferId),
    /// Parked at the destination: guidance ended.
    Arrived(OfferId),
    /// Parked short of it: the rest of the way, on foot, for the phone.
    Walk {
        /// The offer guided to.
        offer: OfferId,
        /// Where the car parked.
        from: Position,
        /// Where to walk to.
        to: Place,
        /// How far, in a straight line.
        distance_m: f64,
    },
}

#[derive(Debug)]
struct Offer {
    id: OfferId,
    destination: Destination,
    expires_at_ms: u64,
}

/// The head unit's navigation hand-off.
#[derive(Debug, Default)]
pub struct Navigation {
    next_id: u64,
    offers: VecDeque<Offer>,
    guiding: Option<(OfferId, Destination)>,
    events: VecDeque<NavigationEvent>,
}

fn check_place(place: &Place) -> Result<(), NavigationError> {
    if place.name.trim().is_empty() {
        return Err(NavigationError::Invalid("a place needs a name"));
    }
    if place.name.len() > MAX_NAME_BYTES {
        return Err(NavigationError::Invalid("a place name is at most 64 bytes"));
    }
    if !place.position.is_valid() {
        return Err(NavigationError::Invalid("a coordinate is out of range"));
    }
    Ok(())
}

impl Navigation {
    /// No offers, no guidance.
    pub fn new() -> Self {
        Self::default()
    }

    /// A phone sends `destination`: held as an offer for the driver.
    pub fn offer(
        &mut self,
        destination: Destination,
        now_ms: u64,
    ) -> Result<OfferId, NavigationError> {
        self.handle_timeout(now_ms);
        check_place(&destination.place)?;
        if destination.waypoints.len() > MAX_WAYPOINTS {
            return Err(NavigationError::Invalid("at most 8 waypoints"));
        }
        for waypoint in &destination.waypoints {
            check_place(waypoint)?;
        }
        if self.offers.len() >= MAX_PENDING_OFFERS {
            return Err(NavigationError::Busy);
        }
        self.next_id += 1;
        let id = OfferId(self.next_id);
        self.offers.push_back(Offer {
            id,
            destination,
            expires_at_ms: now_ms.saturating_add(OFFER_TTL_MS),
        });
        self.events.push_back(NavigationEvent::Offered(id));
        Ok(id)
    }

    /// What the head unit shows the driver: the offers waiting, oldest first.
    pub fn pending(&self) -> Vec<(OfferId, &Destination)> {
        self.offers.iter().map(|o| (o.id, &o.destination)).collect()
    }

    /// The destination guided to, if any.
    pub fn guiding(&self) -> Option<(OfferId, &Destination)> {
        self.guiding.as_ref().map(|(id, d)| (*id, d))
    }

    /// The driver accepts offer `id` on the head unit: guidance to it
    /// starts (replacing any other).
    pub fn accept(&mut self, id: OfferId, now_ms: u64) -> Result<&Destination, NavigationError> {
        let offer = self.take(id, now_ms)?;
        self.events.push_back(NavigationEvent::Accepted(id));
        let (_, destination) = self.guiding.insert((id, offer.destination));
        Ok(destination)
    }

    /// The driver declines offer `id`.
    pub fn decline(&mut self, id: OfferId, now_ms: u64) -> Result<(), NavigationError> {
        self.take(id, now_ms)?;
        self.events.push_back(NavigationEvent::Declined(id));
        Ok(())
    }

    fn take(&mut self, id: OfferId, now_ms: u64) -> Result<Offer, NavigationError> {
        self.handle_timeout(now_ms);
        self.offers
            .iter()
            .position(|o| o.id == id)
            .and_then(|index| self.offers.remove(index))
            .ok_or(NavigationError::NoSuchOffer(id.0))
    }

    /// The car parked at `at`: arrived, a walk handed off, or a stop on the
    /// way. `at` is not kept (R32).
    pub fn parked_at(&mut self, at: Position, now_ms: u64) {
        self.handle_timeout(now_ms);
        let Some((id, destination)) = &self.guiding else {
            return;
        };
        if !at.is_valid() {
            return;
        }
        let distance_m = at.distance_m(&destination.place.position);
        let id = *id;
        if distance_m <= ARRIVED_WITHIN_M {
            self.events.push_back(NavigationEvent::Arrived(id));
        } else if distance_m <= WALK_AT_MOST_M {
            self.events.push_back(NavigationEvent::Walk {
                offer: id,
                from: at,
                to: destination.place.clone(),
                distance_m,
            });
        } else {
            return;
        }
        self.guiding = None;
    }

    /// Drops the offers whose time is up.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        while let Some(front) = self.offers.front() {
            // Offers expire in the order they came (one TTL for all).
            if front.expires_at_ms > now_ms {
                break;
            }
            let id = front.id;
            self.offers.pop_front();
            self.events.push_back(NavigationEvent::Expired(id));
        }
    }

    /// When [`Navigation::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.offers.front().map(|o| o.expires_at_ms)
    }

    /// The next thing the owner's phones should hear.
    pub fn poll_event(&mut self) -> Option<NavigationEvent> {
        self.events.pop_front()
    }
}
