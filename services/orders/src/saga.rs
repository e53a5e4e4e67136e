//! The order saga's actions and compensations over inventory's and payments' gRPC APIs.
//!
//! gRPC errors map to the engine's retry rules: `UNAVAILABLE`, `DEADLINE_EXCEEDED`,
//! `ABORTED`, `RESOURCE_EXHAUSTED` and transport failures are retryable; the rest
//! (`FAILED_PRECONDITION` for no stock or an expired reservation, `INVALID_ARGUMENT`,
//! `NOT_FOUND`…) fail the step at once. After the pivot (`confirm_order`) the capture
//! must happen, so every capture error is retried.
//!
//! The card is kept in memory only ([`CardVault`]) until `authorize_payment`'s answer
//! is saved (the saga moves on to `confirm_order`, or compensates): card data is never
//! written to orders' database. It is not dropped at the answer itself: if saving that
//! answer loses to a cancel, the step runs again, and the idempotent call needs the
//! card again to return the first result. A saga resumed
//! after a restart before it authorized cannot authorize, and is cancelled with
//! reason `payment_details_lost`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::inventory as inv;
use proto::payments as pay;
use saga::{BoxFuture, Call, StepError, Steps};
use serde_json::{Value, json};
use tonic::Code;

use crate::clients::{Clients, Unavailable};
use crate::domain::{PaymentInput, steps};

/// How long an unused card stays in memory.
const CARD_TTL: Duration = Duration::from_secs(15 * 60);

/// Cards of orders not yet authorized, in memory only.
#[derive(Default)]
pub struct CardVault {
    cards: Mutex<HashMap<String, (Instant, PaymentInput)>>,
}

impl std::fmt::Debug for CardVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardVault").finish_non_exhaustive()
    }
}

impl CardVault {
    /// Keeps `card` for `order_id` (dropping cards older than the TTL).
    pub fn put(&self, order_id: &str, card: PaymentInput) {
        let mut cards = self.cards.lock().unwrap_or_else(|p| p.into_inner());
        cards.retain(|_, (at, _)| at.elapsed() < CARD_TTL);
        cards.insert(order_id.to_owned(), (Instant::now(), card));
    }

    fn get(&self, order_id: &str) -> Option<PaymentInput> {
        let cards = self.cards.lock().unwrap_or_else(|p| p.into_inner());
        cards.get(order_id).map(|(_, c)| c.clone())
    }

    fn forget(&self, order_id: &str) {
        self.cards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(order_id);
    }
}

/// The order saga's steps.
#[derive(Debug, Clone)]
pub struct OrderSteps {
    clients: Clients,
    cards: Arc<CardVault>,
}

impl OrderSteps {
    /// Steps calling through `clients`, with cards from `cards`.
    pub fn new(clients: Clients, cards: Arc<CardVault>) -> Self {
        Self { clients, cards }
    }
}

fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
    )
}

fn from_status(s: tonic::Status) -> StepError {
    let message = format!("{:?}: {}", s.code(), s.message());
    if retryable(s.code()) {
        StepError::Retryable(message)
    } else {
        StepError::Fatal(message)
    }
}

fn from_unavailable(u: Unavailable) -> StepError {
    StepError::Retryable(u.to_string())
}

fn text(data: &Value, key: &str) -> String {
    data[key].as_str().unwrap_or_default().to_owned()
}

fn payment_id(call: &Call<'_>) -> Result<String, StepError> {
    call.saga
        .result(steps::AUTHORIZE_PAYMENT)
        .and_then(|r| r["payment_id"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| StepError::Fatal("no authorized payment recorded".into()))
}

impl OrderSteps {
    async fn reserve(&self, call: &Call<'_>) -> Result<Value, StepError> {
        let data = &call.saga.data;
        let items = data["items"]
            .as_array()
            .map(|lines| {
                lines
                    .iter()
                    .map(|l| inv::Line {
                        sku: text(l, "sku"),
                        quantity: u32::try_from(l["quantity"].as_u64().unwrap_or(0)).unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let r = self
            .clients
            .inventory()
            .await
            .map_err(from_unavailable)?
            .reserve(inv::ReserveRequest {
                order_id: call.saga.id.clone(),
                items,
            })
            .await
            .map_err(from_status)?
            .into_inner();
        Ok(json!({"expires_at": r.expires_at}))
    }

    async fn authorize(&self, call: &Call<'_>) -> Result<Value, StepError> {
        let order_id = &call.saga.id;
        let Some(card) = self.cards.get(order_id) else {
            return Err(StepError::Fatal("payment_details_lost".into()));
        };
        let data = &call.saga.data;
        let outcome = self
            .clients
            .payments()
            .await
            .map_err(from_unavailable)?
            .authorize(pay::AuthorizeRequest {
                order_id: order_id.clone(),
                user_id: text(data, "user_id"),
                amount_cents: data["total_cents"].as_i64().unwrap_or(0),
                currency: text(data, "currency"),
                card: Some(pay::Card {
                    number: card.card_number,
                    exp_month: card.exp_month,
                    exp_year: card.exp_year,
                    cvc: card.cvc,
                }),
                idempotency_key: call.key.clone(),
            })
            .await;
        match outcome {
            Ok(p) => {
                let p = p.into_inner();
                if p.status == pay::PaymentStatus::Authorized as i32 {
                    Ok(json!({"payment_id": p.payment_id}))
                } else {
                    Err(StepError::Fatal(format!(
                        "payment_declined: {}",
                        p.decline_reason
                    )))
                }
            }
            Err(s) => Err(from_status(s)),
        }
    }

    async fn confirm(&self, call: &Call<'_>) -> Result<Value, StepError> {
        // Authorization's answer is saved: the card is not needed any more.
        self.cards.forget(&call.saga.id);
        self.clients
            .inventory()
            .await
            .map_err(from_unavailable)?
            .commit(inv::CommitRequest {
                order_id: call.saga.id.clone(),
            })
            .await
            .map_err(from_status)?;
        Ok(json!({}))
    }

    async fn capture(&self, call: &Call<'_>) -> Result<Value, StepError> {
        let payment_id = payment_id(call)?;
        let p = self
            .clients
            .payments()
            .await
            .map_err(from_unavailable)?
            .capture(pay::CaptureRequest {
                payment_id,
                idempotency_key: call.key.clone(),
            })
            .await
            // Past the pivot: the capture must happen, so every error is retried (and
            // the saga is flagged stuck while it keeps failing).
            .map_err(|s| StepError::Retryable(from_status(s).to_string()))?
            .into_inner();
        Ok(json!({"payment_id": p.payment_id}))
    }

    async fn release(&self, call: &Call<'_>) -> Result<(), StepError> {
        self.cards.forget(&call.saga.id);
        self.clients
            .inventory()
            .await
            .map_err(from_unavailable)?
            .release(inv::ReleaseRequest {
                order_id: call.saga.id.clone(),
            })
            .await
            .map_err(from_status)?;
        Ok(())
    }

    async fn void(&self, call: &Call<'_>) -> Result<(), StepError> {
        self.cards.forget(&call.saga.id);
        let payment_id = payment_id(call)?;
        self.clients
            .payments()
            .await
            .map_err(from_unavailable)?
            .void(pay::VoidRequest {
                payment_id,
                idempotency_key: call.key.clone(),
            })
            .await
            .map_err(from_status)?;
        Ok(())
    }

    async fn refund(&self, call: &Call<'_>) -> Result<(), StepError> {
        let payment_id = payment_id(call)?;
        let data = &call.saga.data;
        self.clients
            .payments()
            .await
            .map_err(from_unavailable)?
            .refund(pay::RefundRequest {
                payment_id,
                amount_cents: data["total_cents"].as_i64().unwrap_or(0),
                currency: text(data, "currency"),
                idempotency_key: call.key.clone(),
            })
            .await
            .map_err(from_status)?;
        Ok(())
    }
}

impl Steps for OrderSteps {
    fn run<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Value, StepError>> {
        Box::pin(async move {
            match call.step {
                steps::RESERVE_STOCK => self.reserve(&call).await,
                steps::AUTHORIZE_PAYMENT => self.authorize(&call).await,
                steps::CONFIRM_ORDER => self.confirm(&call).await,
                steps::CAPTURE_PAYMENT => self.capture(&call).await,
                other => Err(StepError::Fatal(format!("unknown step {other}"))),
            }
        })
    }

    fn compensate<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async move {
            match call.name {
                steps::RELEASE_STOCK => self.release(&call).await,
                steps::VOID_PAYMENT => self.void(&call).await,
                steps::REFUND_PAYMENT => self.refund(&call).await,
                other => Err(StepError::Fatal(format!("unknown compensation {other}"))),
            }
        })
    }
}
