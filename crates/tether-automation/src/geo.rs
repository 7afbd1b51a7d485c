//! Places and the geometry of a fix against them.
//!
//! A fix is classified against a place with its accuracy taken into account
//! (the rules of issue 5, fixing the flaws users report in Home Assistant's
//! zones):
//!
//! - inside when `distance + accuracy ≤ radius` (the whole accuracy circle
//!   is inside);
//! - outside when `distance − accuracy ≥ radius + margin` (the whole circle
//!   is beyond the fence plus a margin);
//! - otherwise uncertain, which confirms nothing.
//!
//! For a polygon the same rules use the distance to its boundary: inside
//! when the point is in the polygon at least `accuracy` from every edge,
//! outside when it is out of the polygon at least `accuracy + margin` from
//! every edge.
//!
//! Distances to a circle's centre are great-circle (haversine) distances;
//! a polygon is projected onto a local plane around the fix
//! (equirectangular), which is exact enough for places of a few kilometres
//! and not meant for polygons across the antimeridian or a pole.

use crate::model::PlaceId;

/// Mean Earth radius, metres (IUGG).
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;
/// Most vertices of a polygon place.
pub const MAX_POLYGON_VERTICES: usize = 64;

/// A position in degrees (WGS 84), north and east positive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatLon {
    /// Latitude, −90..=90.
    pub lat: f64,
    /// Longitude, −180..=180.
    pub lon: f64,
}

impl LatLon {
    /// A position.
    pub const fn new(lat: f64, lon: f64) -> Self {
        Self { lat, lon }
    }

    /// Whether both numbers are finite and in range.
    pub fn is_valid(&self) -> bool {
        self.lat.is_finite()
            && self.lon.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon)
    }

    /// Great-circle distance in metres.
    pub fn distance_m(&self, other: &LatLon) -> f64 {
        let (p1, p2) = (self.lat.to_radians(), other.lat.to_radians());
        let dp = p2 - p1;
        let dl = (other.lon - self.lon).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
    }
}

/// The shape of a place.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// A circle.
    Circle {
        /// Its centre.
        center: LatLon,
        /// Its radius, metres.
        radius_m: f64,
    },
    /// A simple polygon (3..=[`MAX_POLYGON_VERTICES`] vertices, not closed:
    /// the last vertex joins the first).
    Polygon(Vec<LatLon>),
}

impl Shape {
    /// Why the shape is unusable, if it is.
    pub fn check(&self) -> Result<(), &'static str> {
        match self {
            Shape::Circle { center, radius_m } => {
                if !center.is_valid() {
                    return Err("circle centre out of range");
                }
                if !radius_m.is_finite() || *radius_m <= 0.0 {
                    return Err("circle radius must be positive");
                }
            }
            Shape::Polygon(vertices) => {
                if vertices.len() < 3 || vertices.len() > MAX_POLYGON_VERTICES {
                    return Err("polygon needs 3..=64 vertices");
                }
                if !vertices.iter().all(LatLon::is_valid) {
                    return Err("polygon vertex out of range");
                }
            }
        }
        Ok(())
    }

    /// Where the sun is computed for this place: the centre of a circle,
    /// the mean of a polygon's vertices.
    pub fn observer(&self) -> LatLon {
        match self {
            Shape::Circle { center, .. } => *center,
            Shape::Polygon(vertices) => {
                let n = vertices.len().max(1) as f64;
                let (lat, lon) = vertices
                    .iter()
                    .fold((0.0, 0.0), |(a, b), v| (a + v.lat, b + v.lon));
                LatLon::new(lat / n, lon / n)
            }
        }
    }

    /// Classifies `fix` against the shape (see the module doc).
    pub fn classify(&self, fix: &Fix, exit_margin_m: f64) -> Reading {
        let accuracy = fix.accuracy_m;
        match self {
            Shape::Circle { center, radius_m } => {
                let d = center.distance_m(&fix.position);
                if d + accuracy <= *radius_m {
                    Reading::Inside
                } else if d - accuracy >= radius_m + exit_margin_m {
                    Reading::Outside
                } else {
                    Reading::Uncertain
                }
            }
            Shape::Polygon(vertices) => {
                let (inside, edge_distance) = polygon_relation(vertices, &fix.position);
                if inside && edge_distance >= accuracy {
                    Reading::Inside
                } else if !inside && edge_distance - accuracy >= exit_margin_m {
                    Reading::Outside
                } else {
                    Reading::Uncertain
                }
            }
        }
    }
}

/// A place: the user's name for it and its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    /// The name that crosses to other nodes.
    pub id: PlaceId,
    /// Its shape; `None` on a node that only receives `{place, enter|leave}`
    /// events (the hub, the phone) and needs no sun times for it.
    pub shape: Option<Shape>,
}

impl Place {
    /// A circle.
    pub fn circle(id: impl Into<String>, center: LatLon, radius_m: f64) -> Self {
        Self {
            id: PlaceId::new(id),
            shape: Some(Shape::Circle { center, radius_m }),
        }
    }

    /// A polygon.
    pub fn polygon(id: impl Into<String>, vertices: Vec<LatLon>) -> Self {
        Self {
            id: PlaceId::new(id),
            shape: Some(Shape::Polygon(vertices)),
        }
    }

    /// A place known by name only.
    pub fn named(id: impl Into<String>) -> Self {
        Self {
            id: PlaceId::new(id),
            shape: None,
        }
    }
}

/// A position fix of the car, with its accuracy (radius, metres, at the
/// receiver's confidence). Used at the moment it is handled and never kept
/// (R32).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    /// Where.
    pub position: LatLon,
    /// How uncertain, metres.
    pub accuracy_m: f64,
}

impl Fix {
    /// A fix.
    pub const fn new(lat: f64, lon: f64, accuracy_m: f64) -> Self {
        Self {
            position: LatLon::new(lat, lon),
            accuracy_m,
        }
    }
}

/// A fix against a place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Surely inside.
    Inside,
    /// Surely outside, beyond the margin.
    Outside,
    /// Neither: near the fence for this accuracy.
    Uncertain,
}

/// Whether `point` is inside `vertices`, and its distance to the boundary
/// in metres, on a plane tangent at `point`.
fn polygon_relation(vertices: &[LatLon], point: &LatLon) -> (bool, f64) {
    let metres_per_deg = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;
    let cos_lat = point.lat.to_radians().cos();
    let project = |v: &LatLon| {
        (
            (v.lon - point.lon) * cos_lat * metres_per_deg,
            (v.lat - point.lat) * metres_per_deg,
        )
    };
    let mut inside = false;
    let mut nearest = f64::INFINITY;
    let n = vertices.len();
    for i in 0..n {
        let (ax, ay) = project(&vertices[i]);
        let (bx, by) = project(&vertices[(i + 1) % n]);
        // Ray casting along +x from the origin (the point).
        if (ay > 0.0) != (by > 0.0) {
            let x_cross = ax + (0.0 - ay) * (bx - ax) / (by - ay);
            if x_cross > 0.0 {
                inside = !inside;
            }
        }
        nearest = nearest.min(segment_distance(ax, ay, bx, by));
    }
    (inside, nearest)
}

/// Distance from the origin to the segment a–b.
fn segment_distance(ax: f64, ay: f64, bx: f64, by: f64) -> f64 {
    let (dx, dy) = (bx - ax, by - ay);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 {
        0.0
    } else {
        (-(ax * dx + ay * dy) / len2).clamp(0.0, 1.0)
    };
    let (px, py) = (ax + t * dx, ay + t * dy);
    (px * px + py * py).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haversine_matches_a_known_distance() {
        // One degree of latitude is about 111.2 km.
        let d = LatLon::new(0.0, 0.0).distance_m(&LatLon::new(1.0, 0.0));
        assert!((d - 111_195.0).abs() < 10.0, "{d}");
    }

    #[test]
    fn polygon_inside_outside_and_edge_distance() {
        // A square of about 222 m around (48.0, 11.0).
        let d = 0.001;
        let square = vec![
            LatLon::new(48.0 - d, 11.0 - d * 1.5),
            LatLon::new(48.0 - d, 11.0 + d * 1.5),
            LatLon::new(48.0 + d, 11.0 + d * 1.5),
            LatLon::new(48.0 + d, 11.0 - d * 1.5),
        ];
        let shape = Shape::Polygon(square);
        assert_eq!(
            shape.classify(&Fix::new(48.0, 11.0, 10.0), 20.0),
            Reading::Inside
        );
        // Centre is ~111 m from the north and south edges.
        assert_eq!(
            shape.classify(&Fix::new(48.0, 11.0, 120.0), 20.0),
            Reading::Uncertain
        );
        assert_eq!(
            shape.classify(&Fix::new(48.01, 11.0, 10.0), 20.0),
            Reading::Outside
        );
    }
}
