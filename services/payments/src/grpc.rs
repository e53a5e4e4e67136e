//! Payments' internal gRPC API (`flotilla.payments.v1.Payments`), called by the order
//! saga: Authorize, Capture, Void, Refund.

use proto::payments as pb;
use proto::payments::payments_server::{Payments as PaymentsApi, PaymentsServer};
use tonic::{Request, Response, Status};

use crate::domain::{Card, Invalid, Money, Operation, Payment, this_month};
use crate::ledger::{AuthorizeInput, PaymentError, Payments};

/// The fully qualified service name (for health reporting).
pub const SERVICE_NAME: &str = "flotilla.payments.v1.Payments";

/// The gRPC server.
#[derive(Clone)]
pub struct PaymentsGrpc {
    payments: Payments,
}

impl PaymentsGrpc {
    /// A server over `payments`.
    pub fn new(payments: Payments) -> PaymentsServer<Self> {
        PaymentsServer::new(Self { payments })
    }
}

/// `INVALID_ARGUMENT` names the field, `FAILED_PRECONDITION` is an illegal transition,
/// `ALREADY_EXISTS` another payment for the order, `ABORTED` and `UNAVAILABLE` are
/// worth retrying. A declined card is not an error: it is a `DECLINED` payment.
fn status(e: PaymentError) -> Status {
    match e {
        PaymentError::Invalid(i) => Status::invalid_argument(i.to_string()),
        PaymentError::NotFound(_) => Status::not_found(e.to_string()),
        PaymentError::Refused(_) => Status::failed_precondition(e.to_string()),
        PaymentError::OrderMismatch(_) => Status::already_exists(e.to_string()),
        PaymentError::InProgress(_) => Status::aborted(e.to_string()),
        PaymentError::Provider(_) => Status::unavailable(e.to_string()),
        PaymentError::Ledger(cause) => {
            tracing::error!(error = %cause, "payments ledger failed");
            Status::unavailable("the payments ledger is unavailable")
        }
    }
}

fn invalid(i: Invalid) -> Status {
    status(PaymentError::Invalid(i))
}

fn to_pb(p: Payment) -> pb::Payment {
    use crate::domain::Status as S;
    let status = match p.status {
        S::Pending => pb::PaymentStatus::Unspecified,
        S::Authorized => pb::PaymentStatus::Authorized,
        S::Captured => pb::PaymentStatus::Captured,
        S::Voided => pb::PaymentStatus::Voided,
        S::Refunded => pb::PaymentStatus::Refunded,
        S::Declined => pb::PaymentStatus::Declined,
    };
    pb::Payment {
        payment_id: p.id,
        order_id: p.order_id,
        amount_cents: p.amount_cents,
        currency: p.currency,
        status: status as i32,
        decline_reason: p.decline_reason.unwrap_or_default(),
        card_last4: p.card_last4,
        refunded_cents: p.refunded_cents,
        created_at: p.created_at,
    }
}

impl PaymentsGrpc {
    /// Runs `op` on its own task, so a caller that goes away mid-call (a spent deadline,
    /// a killed saga) cannot leave the ledger's transaction half done.
    async fn operate(
        &self,
        payment_id: String,
        idempotency_key: String,
        op: Operation,
    ) -> Result<Payment, Status> {
        let payments = self.payments.clone();
        kit::store::detached(
            async move { payments.operate(&payment_id, &idempotency_key, op).await },
        )
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(status)
    }
}

#[tonic::async_trait]
impl PaymentsApi for PaymentsGrpc {
    async fn authorize(
        &self,
        request: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        let req = request.into_inner();
        let amount = Money::parse(req.amount_cents, &req.currency).map_err(invalid)?;
        let card = req.card.unwrap_or_default();
        let card = Card::parse(
            &card.number,
            card.exp_month,
            card.exp_year,
            &card.cvc,
            this_month(),
        )
        .map_err(invalid)?;
        let input = AuthorizeInput {
            order_id: req.order_id,
            user_id: req.user_id,
            amount,
            card,
            idempotency_key: req.idempotency_key,
        };
        let payments = self.payments.clone();
        let p = kit::store::detached(async move { payments.authorize(input).await })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(Response::new(to_pb(p)))
    }

    async fn capture(
        &self,
        request: Request<pb::CaptureRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        let req = request.into_inner();
        let p = self
            .operate(req.payment_id, req.idempotency_key, Operation::Capture)
            .await?;
        Ok(Response::new(to_pb(p)))
    }

    async fn void(
        &self,
        request: Request<pb::VoidRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        let req = request.into_inner();
        let p = self
            .operate(req.payment_id, req.idempotency_key, Operation::Void)
            .await?;
        Ok(Response::new(to_pb(p)))
    }

    async fn refund(
        &self,
        request: Request<pb::RefundRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        let req = request.into_inner();
        let amount = Money::parse(req.amount_cents, &req.currency).map_err(invalid)?;
        let p = self
            .operate(
                req.payment_id,
                req.idempotency_key,
                Operation::Refund(amount),
            )
            .await?;
        Ok(Response::new(to_pb(p)))
    }
}
