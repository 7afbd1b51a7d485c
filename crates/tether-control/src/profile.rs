//! Driver profiles that follow the owner from car to car (R26; SPEC §20,
//! issue 16 item 3): the merge every car of the account runs when another
//! car's copy of a profile reaches it. Sans-IO and pure: no clock, no store,
//! no network; the sync that carries profiles between cars comes on top.
//!
//! A profile is a set of settings (seat and mirror positions, climate, drive
//! mode, the camera watermark switch…), each stamped with when it was last
//! changed and by which car. Merging takes, **per setting**, the most recent
//! change (R26); equal times are broken by the writing car's id, then by the
//! value, so every car that has seen the same changes holds the same profile
//! whatever the order they came in (the merge is commutative, associative
//! and idempotent: a last-writer-wins register per setting). A setting this
//! car's model lacks is kept and carried on to the next car, but not applied
//! here.

use std::collections::BTreeMap;

/// The name of a setting, e.g. `seat.driver.position`; names are the
/// vehicle model's, shared by models that have the setting.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SettingKey(pub String);

impl SettingKey {
    /// A key from its name.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }
}

/// A setting's value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SettingValue {
    /// A switch (the camera watermark).
    Bool(bool),
    /// A position or a level (seat, mirror, climate in tenths of a degree).
    Int(i64),
    /// A named choice (drive mode).
    Text(String),
}

/// Which car wrote a change: 8 bytes the car picks at random once (never a
/// VIN or a device key, R4; only the account's own cars see it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriterId(pub [u8; 8]);

/// A setting's value with when and by which car it was last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    /// The value.
    pub value: SettingValue,
    /// Unix milliseconds of the change, by the writing car's clock.
    pub modified_ms: u64,
    /// The car that made the change.
    pub writer: WriterId,
}

impl Stamped {
    /// The order that decides a merge: time, then writer, then value. Two
    /// stamps are equal in it only when they are the same change.
    fn rank(&self) -> (u64, WriterId, &SettingValue) {
        (self.modified_ms, self.writer, &self.value)
    }
}

/// One driver's profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// When the profile was made (Unix milliseconds): the earliest any car
    /// knows of.
    pub created_ms: u64,
    /// Its settings.
    pub settings: BTreeMap<SettingKey, Stamped>,
}

impl Profile {
    /// An empty profile made at `created_ms`.
    pub fn new(created_ms: u64) -> Self {
        Self {
            created_ms,
            settings: BTreeMap::new(),
        }
    }

    /// When it was last changed: its newest setting's time, else its
    /// creation (R26: both travel with it).
    pub fn modified_ms(&self) -> u64 {
        self.settings
            .values()
            .map(|s| s.modified_ms)
            .max()
            .unwrap_or(self.created_ms)
            .max(self.created_ms)
    }

    /// This car changes `key` to `value` at `now_ms`. A clock that went
    /// back is not allowed to lose the change: it is stamped just after the
    /// setting's current change.
    pub fn set(&mut self, key: SettingKey, value: SettingValue, now_ms: u64, writer: WriterId) {
        let after = self
            .settings
            .get(&key)
            .map_or(0, |s| s.modified_ms.saturating_add(1));
        self.settings.insert(
            key,
            Stamped {
                value,
                modified_ms: now_ms.max(after),
                writer,
            },
        );
    }
}

/// What a merge did on this car.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The profile both copies lead to.
    pub profile: Profile,
    /// Settings whose value changed here and that this car has: to apply to
    /// the seat, the mirrors, the climate…
    pub apply: Vec<(SettingKey, SettingValue)>,
    /// Settings the other copy brought that this car's model lacks: kept in
    /// the profile and carried on, not applied.
    pub carried: Vec<SettingKey>,
}

/// Merges `incoming` (another car's copy) into `local` (this car's), for a
/// car whose model has the settings `supported` says yes to.
pub fn merge(
    local: &Profile,
    incoming: &Profile,
    supported: impl Fn(&SettingKey) -> bool,
) -> Merged {
    let mut profile = Profile {
        created_ms: local.created_ms.min(incoming.created_ms),
        settings: local.settings.clone(),
    };
    let mut apply = Vec::new();
    let mut carried = Vec::new();
    for (key, theirs) in &incoming.settings {
        let wins = match profile.settings.get(key) {
            None => true,
            Some(ours) => theirs.rank() > ours.rank(),
        };
        if !wins {
            continue;
        }
        let changed = profile
            .settings
            .get(key)
            .is_none_or(|ours| ours.value != theirs.value);
        profile.settings.insert(key.clone(), theirs.clone());
        if !supported(key) {
            carried.push(key.clone());
        } else if changed {
            apply.push((key.clone(), theirs.value.clone()));
        }
    }
    Merged {
        profile,
        apply,
        carried,
    }
}
