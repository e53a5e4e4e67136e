//! Orders' rules, free of I/O: what a valid order request is, the order document, the
//! saga's steps, and the events' shapes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use saga::{Definition, SagaState, StepDef, StepStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Lines in one order, at most.
pub const MAX_ITEMS: usize = 50;
/// Units of one line, at most.
pub const MAX_QUANTITY: u32 = 100;

/// The saga's steps and compensations, by name (API.md).
pub mod steps {
    /// Holds the order's stock in inventory.
    pub const RESERVE_STOCK: &str = "reserve_stock";
    /// Holds the amount on the card.
    pub const AUTHORIZE_PAYMENT: &str = "authorize_payment";
    /// Turns held stock into sold stock; the order is `CONFIRMED` (the pivot).
    pub const CONFIRM_ORDER: &str = "confirm_order";
    /// Takes the held amount.
    pub const CAPTURE_PAYMENT: &str = "capture_payment";
    /// Undoes [`RESERVE_STOCK`].
    pub const RELEASE_STOCK: &str = "release_stock";
    /// Undoes [`AUTHORIZE_PAYMENT`].
    pub const VOID_PAYMENT: &str = "void_payment";
    /// Undoes [`CAPTURE_PAYMENT`].
    pub const REFUND_PAYMENT: &str = "refund_payment";
}

/// The order saga: reserve → authorize → confirm (pivot: no cancel after it starts) →
/// capture (retried until it succeeds: the order is confirmed). `deadline` bounds the
/// retries of the steps before the pivot.
pub fn saga_definition(deadline: Duration) -> Definition {
    Definition {
        kind: "place_order",
        steps: vec![
            StepDef::new(steps::RESERVE_STOCK)
                .compensated_by(steps::RELEASE_STOCK)
                .deadline(Some(deadline)),
            StepDef::new(steps::AUTHORIZE_PAYMENT)
                .compensated_by(steps::VOID_PAYMENT)
                .deadline(Some(deadline)),
            StepDef::new(steps::CONFIRM_ORDER)
                .deadline(Some(deadline))
                .pivot(),
            StepDef::new(steps::CAPTURE_PAYMENT)
                .compensated_by(steps::REFUND_PAYMENT)
                .deadline(None),
        ],
    }
}

/// One line of `POST /api/orders`.
#[derive(Debug, Clone, Serialize, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemInput {
    /// The product's SKU.
    #[garde(custom(valid_sku))]
    #[schema(pattern = "^[A-Z0-9][A-Z0-9-]{1,63}$")]
    pub sku: String,
    /// Units, 1–100.
    #[garde(range(min = 1, max = MAX_QUANTITY))]
    #[schema(minimum = 1, maximum = 100)]
    pub quantity: u32,
}

/// The card of `POST /api/orders`; passed to payments, never stored or logged.
#[derive(Clone, Serialize, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentInput {
    /// 12–19 digits passing the Luhn check.
    #[garde(custom(valid_card_number))]
    #[schema(pattern = "^[0-9]{12,19}$")]
    pub card_number: String,
    /// 1–12.
    #[garde(range(min = 1, max = 12))]
    #[schema(minimum = 1, maximum = 12)]
    pub exp_month: u32,
    /// Four digits.
    #[garde(range(min = 2000, max = 2999))]
    #[schema(minimum = 2000, maximum = 2999)]
    pub exp_year: u32,
    /// 3 or 4 digits.
    #[garde(custom(valid_cvc))]
    #[schema(pattern = "^[0-9]{3,4}$")]
    pub cvc: String,
}

impl std::fmt::Debug for PaymentInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentInput")
            .field("card_number", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// `POST /api/orders` body.
#[derive(Debug, Clone, Serialize, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "items": [{"sku": "FLT-BOAT-001", "quantity": 1}],
    "payment": {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
}))]
pub struct PlaceOrder {
    /// 1–50 lines, each SKU once.
    #[garde(length(min = 1, max = MAX_ITEMS), dive, custom(distinct_skus))]
    #[schema(min_items = 1, max_items = 50)]
    pub items: Vec<ItemInput>,
    /// The card.
    #[garde(dive)]
    pub payment: PaymentInput,
}

fn valid_sku(sku: &str, _: &()) -> garde::Result {
    let ok = (2..=64).contains(&sku.len())
        && sku.starts_with(|c: char| c.is_ascii_uppercase() || c.is_ascii_digit())
        && sku
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(garde::Error::new(
            "a SKU is 2-64 of A-Z, 0-9 and '-', starting with a letter or digit",
        ))
    }
}

fn distinct_skus(items: &[ItemInput], _: &()) -> garde::Result {
    for (i, item) in items.iter().enumerate() {
        if items[..i].iter().any(|o| o.sku == item.sku) {
            return Err(garde::Error::new(format!(
                "SKU {} is listed twice; put the whole quantity on one line",
                item.sku
            )));
        }
    }
    Ok(())
}

/// The Luhn checksum of a string of digits.
pub fn luhn(digits: &str) -> bool {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn valid_card_number(n: &str, _: &()) -> garde::Result {
    if (12..=19).contains(&n.len()) && luhn(n) {
        Ok(())
    } else {
        Err(garde::Error::new(
            "not a valid card number (12-19 digits with a valid check digit)",
        ))
    }
}

fn valid_cvc(c: &str, _: &()) -> garde::Result {
    if (3..=4).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(garde::Error::new("3 or 4 digits"))
    }
}

/// Checks an `Idempotency-Key` header value: 1–255 printable ASCII characters.
pub fn valid_idempotency_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Where an order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum OrderStatus {
    /// The saga runs.
    Pending,
    /// Stock is sold and the payment authorized (then captured).
    Confirmed,
    /// Compensated; see `reason`.
    Cancelled,
}

impl OrderStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

/// One line of an order, priced by inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderItem {
    /// The SKU.
    pub sku: String,
    /// Units.
    pub quantity: u32,
    /// Inventory's price when the order was placed.
    pub unit_price_cents: i64,
}

/// The order document, as stored (JSON) and as `GET /api/orders/{id}` shows it
/// (with the saga's `steps`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Order {
    /// UUIDv7.
    pub id: String,
    /// The customer.
    pub user_id: String,
    /// The lines.
    pub items: Vec<OrderItem>,
    /// Sum of quantity × unit price.
    pub total_cents: i64,
    /// ISO 4217.
    pub currency: String,
    /// `PENDING`, `CONFIRMED` or `CANCELLED`.
    pub status: OrderStatus,
    /// Why it was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC.
    pub updated_at: String,
}

/// A product's price as inventory tells it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Price {
    /// Minor units.
    pub price_cents: i64,
    /// ISO 4217.
    pub currency: String,
}

/// Why the request's lines cannot be priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricingError {
    /// `items[3].sku`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Prices the lines (`prices[i]` is line `i`'s product, `None` if unknown); one
/// currency per order; totals cannot overflow.
pub fn price_lines(
    items: &[ItemInput],
    prices: &[Option<Price>],
) -> Result<(Vec<OrderItem>, i64, String), PricingError> {
    let mut lines = Vec::with_capacity(items.len());
    let mut total: i64 = 0;
    let mut currency: Option<String> = None;
    for (i, (item, price)) in items.iter().zip(prices).enumerate() {
        let field = format!("items[{i}].sku");
        let Some(price) = price else {
            return Err(PricingError {
                field,
                message: format!("no product with SKU {}", item.sku),
            });
        };
        match &currency {
            Some(c) if *c != price.currency => {
                return Err(PricingError {
                    field,
                    message: format!("priced in {}, the order in {c}", price.currency),
                });
            }
            _ => currency = Some(price.currency.clone()),
        }
        total = price
            .price_cents
            .checked_mul(i64::from(item.quantity))
            .and_then(|line| total.checked_add(line))
            .ok_or_else(|| PricingError {
                field: field.clone(),
                message: "the total is too large".into(),
            })?;
        lines.push(OrderItem {
            sku: item.sku.clone(),
            quantity: item.quantity,
            unit_price_cents: price.price_cents,
        });
    }
    Ok((lines, total, currency.unwrap_or_default()))
}

/// The saga's input kept with its state (no card data).
pub fn saga_data(order: &Order) -> Value {
    json!({
        "order_id": order.id,
        "user_id": order.user_id,
        "items": order.items.iter().map(|l| json!({"sku": l.sku, "quantity": l.quantity})).collect::<Vec<_>>(),
        "total_cents": order.total_cents,
        "currency": order.currency,
    })
}

/// The fields every `orders.*` event carries, from the saga's data.
fn event_data(data: &Value, at: &str) -> Value {
    json!({
        "orderId": data["order_id"],
        "userId": data["user_id"],
        "items": data["items"],
        "total_cents": data["total_cents"],
        "currency": data["currency"],
        "timestamp": at,
    })
}

/// `orders.created` data (API.md).
pub fn created_event(order: &Order) -> Value {
    event_data(&saga_data(order), &order.created_at)
}

/// `orders.confirmed` data.
pub fn confirmed_event(saga: &SagaState, at: &str) -> Value {
    event_data(&saga.data, at)
}

/// `orders.cancelled` data, with the reason.
pub fn cancelled_event(saga: &SagaState, reason: &str, at: &str) -> Value {
    let mut data = event_data(&saga.data, at);
    data["reason"] = json!(reason);
    data
}

/// One entry of an order's step timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepView {
    /// The step (`reserve_stock`).
    pub name: String,
    /// `pending`, `done`, `failed` or `compensated`.
    pub status: String,
    /// When it last changed (RFC 3339), `null` while never attempted.
    pub at: Option<String>,
    /// Attempts of its action.
    pub attempts: u32,
    /// The compensation that undid it (`release_stock`), once compensated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation: Option<String>,
    /// The last error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The saga's steps as the order's timeline.
pub fn timeline(definition: &Definition, saga: &SagaState) -> Vec<StepView> {
    definition
        .steps
        .iter()
        .zip(&saga.steps)
        .map(|(d, s)| StepView {
            name: s.name.clone(),
            status: match s.status {
                StepStatus::Pending => "pending",
                StepStatus::Done => "done",
                StepStatus::Failed => "failed",
                StepStatus::Compensated => "compensated",
            }
            .to_owned(),
            at: s.at_ms.map(rfc3339_ms),
            attempts: s.attempts,
            compensation: (s.status == StepStatus::Compensated)
                .then(|| d.compensation.map(str::to_owned))
                .flatten(),
            error: s.error.clone(),
        })
        .collect()
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Unix milliseconds as RFC 3339 UTC.
pub fn rfc3339_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use garde::Validate;

    fn body(items: Value, card: &str) -> PlaceOrder {
        serde_json::from_value(json!({
            "items": items,
            "payment": {"card_number": card, "exp_month": 12, "exp_year": 2099, "cvc": "123"}
        }))
        .unwrap()
    }

    #[test]
    fn luhn_accepts_the_test_cards_and_rejects_typos() {
        for ok in [
            "4242424242424242",
            "4000000000000002",
            "4000000000009995",
            "4000000000000119",
        ] {
            assert!(luhn(ok), "{ok}");
        }
        assert!(!luhn("4242424242424241"));
        assert!(!luhn("42424242x4242424"));
        assert!(!luhn(""));
    }

    #[test]
    fn the_documented_example_is_a_valid_order() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(PlaceOrder::schema()).unwrap();
        let example: PlaceOrder = serde_json::from_value(schema["example"].clone()).unwrap();
        assert!(example.validate().is_ok());
        assert!(luhn(&example.payment.card_number));
        assert_eq!(schema["properties"]["items"]["maxItems"], MAX_ITEMS);
    }

    #[test]
    fn validates_lines_and_card() {
        let ok = body(json!([{"sku": "MUG-1", "quantity": 2}]), "4242424242424242");
        assert!(ok.validate().is_ok());
        let bad_card = body(json!([{"sku": "MUG-1", "quantity": 2}]), "4242424242424241");
        assert!(bad_card.validate().is_err());
        let zero = body(json!([{"sku": "MUG-1", "quantity": 0}]), "4242424242424242");
        assert!(zero.validate().is_err());
        let many = body(
            json!([{"sku": "MUG-1", "quantity": 101}]),
            "4242424242424242",
        );
        assert!(many.validate().is_err());
        assert!(
            body(json!([]), "4242424242424242").validate().is_err(),
            "no lines"
        );
        let lines: Vec<Value> = (0..51)
            .map(|i| json!({"sku": format!("SKU-{i}"), "quantity": 1}))
            .collect();
        assert!(
            body(Value::from(lines), "4242424242424242")
                .validate()
                .is_err()
        );
        let twice = body(
            json!([{"sku": "A1", "quantity": 1}, {"sku": "A1", "quantity": 2}]),
            "4242424242424242",
        );
        assert!(twice.validate().is_err());
        let lower = body(json!([{"sku": "mug", "quantity": 1}]), "4242424242424242");
        assert!(lower.validate().is_err());
    }

    #[test]
    fn prices_come_from_the_catalog_in_one_currency() {
        let items = vec![
            ItemInput {
                sku: "A1".into(),
                quantity: 2,
            },
            ItemInput {
                sku: "B2".into(),
                quantity: 3,
            },
        ];
        let eur = |c| {
            Some(Price {
                price_cents: c,
                currency: "EUR".into(),
            })
        };
        let (lines, total, cur) = price_lines(&items, &[eur(100), eur(250)]).unwrap();
        assert_eq!(total, 950);
        assert_eq!(cur, "EUR");
        assert_eq!(lines[1].unit_price_cents, 250);
        let e = price_lines(&items, &[eur(100), None]).unwrap_err();
        assert_eq!(e.field, "items[1].sku");
        let usd = Some(Price {
            price_cents: 1,
            currency: "USD".into(),
        });
        assert!(price_lines(&items, &[eur(100), usd]).is_err());
        assert!(price_lines(&items, &[eur(i64::MAX), eur(1)]).is_err());
    }

    #[test]
    fn idempotency_keys_are_short_printable_ascii() {
        assert!(valid_idempotency_key("k-1"));
        assert!(!valid_idempotency_key(""));
        assert!(!valid_idempotency_key("a b"));
        assert!(!valid_idempotency_key(&"k".repeat(256)));
    }
}
