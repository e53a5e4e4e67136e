//! Inventory's pure rules: what a SKU is, what a product is, how cursors work, and the
//! demo catalog. No I/O here.

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
        })
        .collect()
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
