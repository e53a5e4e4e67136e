//! Inventory's pure rules: what a SKU is, what a product is, how cursors work, how a
//! reservation moves through its states, and the demo catalog. No I/O here.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// A stock-keeping unit: 2–64 of `A-Z`, `0-9` and `-`, starting with a letter or digit.
/// Holding a `Sku` means it is valid.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Sku(String);

impl Sku {
    /// Parses a SKU.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let ok = (2..=64).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_uppercase() || c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err("a SKU is 2-64 of A-Z, 0-9 and '-', starting with a letter or digit")
        }
    }

    /// The SKU as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Sku {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Sku::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A product with its stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// The SKU.
    pub sku: Sku,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Unit price in minor units.
    pub price_cents: i64,
    /// ISO 4217 currency.
    pub currency: String,
    /// Units on hand (including reserved ones).
    pub stock: i64,
    /// Units held for orders in flight.
    pub reserved: i64,
    /// Units sold (committed reservations); `available + reserved + sold` only changes
    /// when an administrator sets the stock.
    pub sold: i64,
}

impl Product {
    /// Units that can still be ordered.
    pub fn available(&self) -> i64 {
        (self.stock - self.reserved).max(0)
    }
}

/// A pagination cursor: opaque to clients, the last SKU of the previous page inside.
pub fn encode_cursor(last: &Sku) -> String {
    URL_SAFE_NO_PAD.encode(last.as_str())
}

/// Reads a cursor made by [`encode_cursor`].
pub fn decode_cursor(cursor: &str) -> Option<Sku> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    Sku::parse(std::str::from_utf8(&bytes).ok()?).ok()
}

/// The demo catalog `flotilla up` seeds once: 24 products.
pub fn demo_catalog() -> Vec<Product> {
    const ITEMS: &[(&str, &str, &str, i64, i64)] = &[
        (
            "FLT-BOAT-001",
            "Dinghy",
            "A two-person sailing dinghy.",
            129_900,
            5,
        ),
        (
            "FLT-BOAT-002",
            "Kayak",
            "Sit-on-top sea kayak, 3.8 m.",
            74_900,
            12,
        ),
        ("FLT-BOAT-003", "Canoe", "Open canoe for three.", 99_900, 6),
        (
            "FLT-BOAT-004",
            "Paddle board",
            "Inflatable stand-up paddle board.",
            49_900,
            20,
        ),
        (
            "FLT-GEAR-001",
            "Life jacket",
            "ISO 12402-5 buoyancy aid, adult.",
            5_900,
            80,
        ),
        (
            "FLT-GEAR-002",
            "Paddle",
            "Carbon kayak paddle, 220 cm.",
            18_900,
            40,
        ),
        (
            "FLT-GEAR-003",
            "Dry bag 20 L",
            "Roll-top dry bag.",
            2_400,
            150,
        ),
        (
            "FLT-GEAR-004",
            "Wetsuit",
            "3/2 mm full wetsuit.",
            19_900,
            35,
        ),
        (
            "FLT-GEAR-005",
            "Neoprene gloves",
            "2 mm paddling gloves.",
            2_900,
            90,
        ),
        (
            "FLT-GEAR-006",
            "Spray deck",
            "Neoprene spray deck, medium.",
            8_900,
            25,
        ),
        ("FLT-GEAR-007", "Helmet", "Water sports helmet.", 6_900, 45),
        ("FLT-GEAR-008", "Bilge pump", "Hand pump, 45 cm.", 3_200, 60),
        (
            "FLT-NAV-001",
            "Compass",
            "Deck-mounted marine compass.",
            11_900,
            30,
        ),
        (
            "FLT-NAV-002",
            "Chart set",
            "Coastal charts, waterproof.",
            4_900,
            70,
        ),
        (
            "FLT-NAV-003",
            "Handheld GPS",
            "Floating handheld GPS.",
            24_900,
            18,
        ),
        (
            "FLT-NAV-004",
            "VHF radio",
            "Handheld VHF with DSC.",
            21_900,
            22,
        ),
        (
            "FLT-SAFE-001",
            "Flare kit",
            "Inshore flare pack.",
            7_900,
            40,
        ),
        (
            "FLT-SAFE-002",
            "Throw line",
            "20 m rescue throw bag.",
            3_900,
            55,
        ),
        (
            "FLT-SAFE-003",
            "First aid kit",
            "Waterproof marine first aid kit.",
            4_500,
            65,
        ),
        (
            "FLT-SAFE-004",
            "Whistle",
            "Pea-less safety whistle.",
            500,
            300,
        ),
        (
            "FLT-DECK-001",
            "Mooring line",
            "12 mm braided line, 10 m.",
            3_500,
            100,
        ),
        (
            "FLT-DECK-002",
            "Fender",
            "Inflatable fender, 60 cm.",
            2_900,
            85,
        ),
        (
            "FLT-DECK-003",
            "Anchor",
            "Folding grapnel anchor, 3 kg.",
            4_200,
            30,
        ),
        (
            "FLT-DECK-004",
            "Cleat",
            "Stainless steel cleat, 15 cm.",
            1_200,
            120,
        ),
    ];
    ITEMS
        .iter()
        .map(|&(sku, name, description, price_cents, stock)| Product {
            sku: Sku::parse(sku).expect("demo SKUs are valid"),
            name: name.to_owned(),
            description: description.to_owned(),
            price_cents,
            currency: "EUR".to_owned(),
            stock,
            reserved: 0,
            sold: 0,
        })
        .collect()
}

/// Is `s` an ISO 4217-shaped currency code (three upper-case letters)?
pub fn is_currency(s: &str) -> bool {
    s.len() == 3 && s.chars().all(|c| c.is_ascii_uppercase())
}

/// One line of a reservation: `quantity` units of `sku`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Line {
    /// The SKU.
    pub sku: Sku,
    /// Units, at least 1.
    pub quantity: i64,
}

/// Where a reservation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReservationStatus {
    /// Stock is held until commit, release or expiry.
    Reserved,
    /// The held stock was sold.
    Committed,
    /// The held stock was returned on request.
    Released,
    /// The held stock was returned because the reservation outlived its TTL.
    Expired,
}

impl ReservationStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Committed => "committed",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "reserved" => Self::Reserved,
            "committed" => Self::Committed,
            "released" => Self::Released,
            "expired" => Self::Expired,
            _ => return None,
        })
    }
}

/// Stock held for one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The order it belongs to (the idempotency key of every call).
    pub order_id: String,
    /// The lines, one per SKU, sorted by SKU.
    pub lines: Vec<Line>,
    /// Where it is.
    pub status: ReservationStatus,
    /// Unix milliseconds after which a held reservation expires.
    pub expires_at_ms: i64,
}

/// Why a reservation call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReservationError {
    /// The request itself is invalid.
    #[error("{field}: {message}")]
    Invalid {
        /// The offending field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No reservation exists for this order.
    #[error("no reservation for order {0:?}")]
    NotFound(String),
    /// A line names a SKU the catalog does not have.
    #[error("unknown SKU {0}")]
    UnknownSku(Sku),
    /// A line asks for more than is available; nothing was reserved.
    #[error("not enough stock of {0}")]
    Insufficient(Sku),
    /// The order already has a reservation with other lines.
    #[error("order {0:?} already has a reservation with other lines")]
    Mismatch(String),
    /// Release after commit.
    #[error("the reservation of order {0:?} is committed and cannot be released")]
    Committed(String),
    /// Commit of a reservation that no longer holds stock.
    #[error("the reservation of order {order_id:?} is {status:?} and cannot be committed")]
    NotHeld {
        /// The order.
        order_id: String,
        /// Its status.
        status: ReservationStatus,
    },
    /// The store failed.
    #[error("inventory store: {0}")]
    Backend(String),
}

/// Checks a reserve request: an order id of 1–128 printable characters and 1–100 lines
/// of at least one unit each. Lines naming the same SKU are merged; the result is sorted
/// by SKU, so equal requests compare equal.
pub fn normalize_request(
    order_id: &str,
    lines: Vec<(String, i64)>,
) -> Result<Vec<Line>, ReservationError> {
    check_order_id(order_id)?;
    let invalid = |field: String, message: &str| ReservationError::Invalid {
        field,
        message: message.to_owned(),
    };
    if lines.is_empty() || lines.len() > 100 {
        return Err(invalid("items".into(), "between 1 and 100 lines"));
    }
    let mut merged: std::collections::BTreeMap<Sku, i64> = std::collections::BTreeMap::new();
    for (i, (sku, quantity)) in lines.into_iter().enumerate() {
        let sku = Sku::parse(&sku).map_err(|m| invalid(format!("items[{i}].sku"), m))?;
        if !(1..=1_000_000).contains(&quantity) {
            return Err(invalid(
                format!("items[{i}].quantity"),
                "between 1 and 1000000",
            ));
        }
        *merged.entry(sku).or_default() += quantity;
    }
    Ok(merged
        .into_iter()
        .map(|(sku, quantity)| Line { sku, quantity })
        .collect())
}

/// Checks an order id: 1–128 printable ASCII characters.
pub fn check_order_id(order_id: &str) -> Result<(), ReservationError> {
    if order_id.is_empty()
        || order_id.len() > 128
        || !order_id.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(ReservationError::Invalid {
            field: "order_id".into(),
            message: "1-128 printable ASCII characters".into(),
        });
    }
    Ok(())
}

/// What a caller asks of an existing reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Sell the held stock.
    Commit,
    /// Return the held stock.
    Release,
    /// Return the held stock if the TTL has passed (the sweeper).
    Expire,
}

/// What a store must do for an [`Action`], decided from the current state alone so
/// every backend follows the same rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Move the held reservation to `to` (moving its stock), then answer with the
    /// reservation, or with `refuse` if set.
    Transition {
        /// The new status.
        to: ReservationStatus,
        /// The refusal to answer after the transition (commit after expiry).
        refuse: Option<ReservationError>,
    },
    /// Record a released reservation without lines, so a `Reserve` arriving after its
    /// `Release` (a compensation racing a slow request) holds nothing.
    Tombstone,
    /// Change nothing; answer with the reservation as it is (if any).
    Nothing,
    /// Change nothing; refuse.
    Refuse(ReservationError),
}

/// The rules of a reservation's life: `reserved → committed | released | expired`; a
/// repeated commit or release is a no-op, a release after commit and a commit after
/// release or expiry are refused; a held reservation past its TTL expires first.
pub fn decide(order_id: &str, current: Option<&Reservation>, action: Action, now_ms: i64) -> Step {
    use ReservationStatus as S;
    let Some(r) = current else {
        return match action {
            Action::Commit => Step::Refuse(ReservationError::NotFound(order_id.to_owned())),
            Action::Release => Step::Tombstone,
            Action::Expire => Step::Nothing,
        };
    };
    match (r.status, action) {
        (S::Reserved, _) if r.expires_at_ms <= now_ms => Step::Transition {
            to: S::Expired,
            refuse: (action == Action::Commit).then(|| ReservationError::NotHeld {
                order_id: order_id.to_owned(),
                status: S::Expired,
            }),
        },
        (S::Reserved, Action::Commit) => Step::Transition {
            to: S::Committed,
            refuse: None,
        },
        (S::Reserved, Action::Release) => Step::Transition {
            to: S::Released,
            refuse: None,
        },
        (S::Committed, Action::Release) => {
            Step::Refuse(ReservationError::Committed(order_id.to_owned()))
        }
        (status @ (S::Released | S::Expired), Action::Commit) => {
            Step::Refuse(ReservationError::NotHeld {
                order_id: order_id.to_owned(),
                status,
            })
        }
        _ => Step::Nothing,
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sku_rules() {
        assert!(Sku::parse("FLT-BOAT-001").is_ok());
        assert!(Sku::parse("A1").is_ok());
        for bad in [
            "",
            "a",
            "-AB",
            "ab-1",
            "FLT BOAT",
            "../etc",
            &"A".repeat(65),
        ] {
            assert!(Sku::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn demo_catalog_is_valid_and_unique() {
        let c = demo_catalog();
        assert!(c.len() >= 20);
        let mut skus: Vec<_> = c.iter().map(|p| p.sku.clone()).collect();
        skus.sort();
        skus.dedup();
        assert_eq!(skus.len(), c.len());
    }

    fn held(expires_at_ms: i64) -> Reservation {
        Reservation {
            order_id: "o1".into(),
            lines: vec![],
            status: ReservationStatus::Reserved,
            expires_at_ms,
        }
    }

    #[test]
    fn reservation_rules() {
        use ReservationStatus as S;
        let live = held(1_000);
        assert!(matches!(
            decide("o1", Some(&live), Action::Commit, 10),
            Step::Transition {
                to: S::Committed,
                refuse: None
            }
        ));
        assert!(matches!(
            decide("o1", Some(&live), Action::Commit, 1_000),
            Step::Transition {
                to: S::Expired,
                refuse: Some(_)
            }
        ));
        assert_eq!(decide("o1", Some(&live), Action::Expire, 10), Step::Nothing);
        assert_eq!(decide("o1", None, Action::Release, 10), Step::Tombstone);
        let committed = Reservation {
            status: S::Committed,
            ..held(0)
        };
        assert!(matches!(
            decide("o1", Some(&committed), Action::Release, 10),
            Step::Refuse(ReservationError::Committed(_))
        ));
        assert_eq!(
            decide("o1", Some(&committed), Action::Commit, 10),
            Step::Nothing
        );
        let released = Reservation {
            status: S::Released,
            ..held(0)
        };
        assert_eq!(
            decide("o1", Some(&released), Action::Release, 10),
            Step::Nothing
        );
        assert!(matches!(
            decide("o1", Some(&released), Action::Commit, 10),
            Step::Refuse(ReservationError::NotHeld { .. })
        ));
    }

    #[test]
    fn requests_are_merged_sorted_and_checked() {
        let lines = normalize_request(
            "o1",
            vec![("B-1".into(), 2), ("A-1".into(), 1), ("B-1".into(), 3)],
        )
        .unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].sku.as_str(), lines[0].quantity), ("A-1", 1));
        assert_eq!((lines[1].sku.as_str(), lines[1].quantity), ("B-1", 5));
        let field = |r: Result<Vec<Line>, ReservationError>| match r.unwrap_err() {
            ReservationError::Invalid { field, .. } => field,
            other => panic!("{other}"),
        };
        assert_eq!(
            field(normalize_request("o1", vec![("A-1".into(), 0)])),
            "items[0].quantity"
        );
        assert_eq!(
            field(normalize_request("o1", vec![("A-1".into(), -3)])),
            "items[0].quantity"
        );
        assert_eq!(
            field(normalize_request("o1", vec![("bad sku".into(), 1)])),
            "items[0].sku"
        );
        assert_eq!(
            field(normalize_request("", vec![("A-1".into(), 1)])),
            "order_id"
        );
        assert_eq!(field(normalize_request("o1", vec![])), "items");
        assert!(is_currency("EUR") && !is_currency("eur") && !is_currency("EURO"));
    }

    proptest! {
        #[test]
        fn cursors_round_trip(s in "[A-Z0-9][A-Z0-9-]{1,63}") {
            let sku = Sku::parse(&s).unwrap();
            prop_assert_eq!(decode_cursor(&encode_cursor(&sku)), Some(sku));
        }

        #[test]
        fn garbage_cursors_never_panic(s in ".{0,100}") {
            let _ = decode_cursor(&s);
        }
    }
}
