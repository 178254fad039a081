//! A consistent hash ring: which live member should own a node.
//!
//! Why it is shaped so:
//!
//! - **It proposes; the `owner` column decides.** Every member computes the
//!   same ring from the same list of live members, so they agree on where a
//!   node belongs without talking to each other; a claim is still an
//!   `UPDATE` conditional on the row (see `postgres::members`), so two
//!   members that briefly disagree (one saw a join the other has not yet)
//!   never both own a node.
//! - **Virtual points** ([`POINTS_PER_MEMBER`] per member) spread each
//!   member's share over the circle, so a member joining or leaving moves
//!   about `1/n` of the nodes, taken evenly from (or given evenly to) the
//!   others.
//! - **Keyed by BMC endpoint**, not by node: nodes behind one shared BMC map
//!   to one member, so the per-endpoint spacing and limits hold in one
//!   process. The caller chooses the key.
//! - **A hash of its own** (FNV-1a, then a 64-bit finaliser): the standard
//!   library's hasher may change between Rust releases, and members built by
//!   different releases must place every key alike.

/// Points on the circle per member. Stored in the database once: a member
/// whose build uses another number refuses to join (`members::join`).
pub const POINTS_PER_MEMBER: u32 = 64;

/// The ring over a set of members.
#[derive(Clone, Debug)]
pub struct Ring {
    /// (position on the circle, index into `members`), sorted by position.
    points: Vec<(u64, usize)>,
    members: Vec<String>,
}

impl Ring {
    /// A ring over `members` (duplicates count once), `points` each.
    pub fn new(members: impl IntoIterator<Item = String>, points: u32) -> Ring {
        let mut members: Vec<String> = members.into_iter().collect();
        members.sort();
        members.dedup();
        let mut circle = Vec::with_capacity(members.len() * points as usize);
        for (index, member) in members.iter().enumerate() {
            for point in 0..points {
                circle.push((hash(format!("{member}#{point}").as_bytes()), index));
            }
        }
        // Ties (vanishingly rare) are broken by member, so every member
        // sorts the circle alike.
        circle.sort_unstable();
        Ring { points: circle, members }
    }

    /// The member that should own `key`: the first point at or after the
    /// key's hash, going round. `None` on an empty ring.
    pub fn owner(&self, key: &str) -> Option<&str> {
        if self.points.is_empty() {
            return None;
        }
        let at = hash(key.as_bytes());
        let i = self.points.partition_point(|&(position, _)| position < at);
        let (_, member) = self.points[i % self.points.len()];
        Some(&self.members[member])
    }

    /// The members of the ring, sorted.
    pub fn members(&self) -> &[String] {
        &self.members
    }
}

/// FNV-1a over the bytes, then splitmix64's finaliser so that keys that
/// differ in their last bytes land far apart.
fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn ring(members: &[&str]) -> Ring {
        Ring::new(members.iter().map(|m| m.to_string()), POINTS_PER_MEMBER)
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("https://10.{}.{}.{}:443", i / 65536, (i / 256) % 256, i % 256)).collect()
    }

    fn shares(ring: &Ring, keys: &[String]) -> HashMap<String, usize> {
        let mut shares = HashMap::new();
        for k in keys {
            *shares.entry(ring.owner(k).unwrap().to_string()).or_default() += 1;
        }
        shares
    }

    #[test]
    fn an_empty_ring_owns_nothing_and_one_member_owns_everything() {
        assert_eq!(ring(&[]).owner("x"), None);
        let one = ring(&["a"]);
        assert!(keys(100).iter().all(|k| one.owner(k) == Some("a")));
    }

    #[test]
    fn the_order_members_are_listed_in_does_not_matter() {
        let a = ring(&["m1", "m2", "m3"]);
        let b = ring(&["m3", "m1", "m2", "m1"]);
        assert_eq!(b.members(), ["m1", "m2", "m3"]);
        for k in keys(1000) {
            assert_eq!(a.owner(&k), b.owner(&k), "{k}");
        }
    }

    #[test]
    fn three_members_share_ten_thousand_endpoints_roughly_evenly() {
        let keys = keys(10_000);
        let shares = shares(&ring(&["m1", "m2", "m3"]), &keys);
        assert_eq!(shares.len(), 3);
        for (member, n) in shares {
            // An even share is 3,333; 64 points keep each within a third of it.
            assert!((2_200..=4_500).contains(&n), "{member} got {n}");
        }
    }

    #[test]
    fn a_member_joining_takes_keys_only_for_itself_and_leaving_gives_back_only_its_own() {
        let keys = keys(10_000);
        let before = ring(&["m1", "m2", "m3"]);
        let after = ring(&["m1", "m2", "m3", "m4"]);
        let mut moved = 0;
        for k in &keys {
            let (b, a) = (before.owner(k).unwrap(), after.owner(k).unwrap());
            if a != b {
                assert_eq!(a, "m4", "{k} moved from {b} to {a}, not to the new member");
                moved += 1;
            }
        }
        // About a quarter moves; never most of them.
        assert!((1_500..=3_500).contains(&moved), "{moved} keys moved");
        // And back: the leaver's keys go to the others, nothing else moves.
        for k in &keys {
            if after.owner(k) != Some("m4") {
                assert_eq!(after.owner(k), before.owner(k), "{k}");
            }
        }
    }
}
