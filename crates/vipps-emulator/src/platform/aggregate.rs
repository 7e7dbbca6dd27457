//! Aggregates: the typed documents that product APIs keep in the store, and the pure commands that change them.
//!
//! The store knows an aggregate only as bytes under an [`AggregateKey`], with a state label and an optional due
//! time (when it changes by itself). A product describes a change as a [`Command`]; every backend runs it the same
//! way inside one transaction: load the current document, call [`Command::apply`] (pure: time and ids come from
//! the [`Ctx`]), save what it puts, fan its events out to the webhook outbox, and store its answer with the
//! idempotency key. Products stay typed through [`Aggregate`] and [`change`].

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::http::StoredResponse;
use super::ids::IdGen;

/// Which document: the product's kind (such as `epayment.payment`), the tenant (the sales unit) and the id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct AggregateKey {
    /// The product's name for the document type.
    pub kind: &'static str,
    /// The sales unit (MSN) that owns it; webhooks of this tenant receive its events.
    pub tenant: String,
    /// Its id within the tenant, such as the payment reference.
    pub id: String,
}

/// A decoded document, shared between the store's read cache and the handlers.
pub(crate) type Decoded = Arc<dyn Any + Send + Sync>;

/// Turns stored bytes into the product's type.
pub(crate) type Decoder = fn(&[u8]) -> Result<Decoded, String>;

/// The request a change runs for, so answers can name it (`traceId`, `instance`).
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestInfo {
    /// Trace id of the request.
    pub trace_id: Arc<str>,
    /// The request path.
    pub instance: Arc<str>,
}

/// What a change may use from the outside.
pub(crate) struct Ctx<'a> {
    /// Emulator time of the write, Unix milliseconds.
    pub now_ms: i64,
    /// Fresh ids (only spent by writes that execute, never by replays).
    pub ids: &'a dyn IdGen,
    /// The request, for problem bodies.
    pub request: &'a RequestInfo,
}

/// A document to save.
pub(crate) struct Put {
    /// Serialized document.
    pub data: Vec<u8>,
    /// The same document, decoded (for the read cache).
    pub value: Decoded,
    /// A state label, for queries and counts.
    pub state: &'static str,
    /// When the document changes by itself next, if ever.
    pub due_ms: Option<i64>,
    /// The aggregate it belongs to (see [`Aggregate::parent`]).
    pub parent: Option<String>,
    /// Insert only: if a document with this key appeared meanwhile, the backend runs the command again on it.
    pub create: bool,
}

/// An event for the webhook outbox, delivered to every registration of the tenant that subscribes to its type.
#[derive(Debug, Clone)]
pub(crate) struct OutboxEvent {
    /// The webhook event type, such as `epayments.payment.captured.v1`.
    pub event_type: String,
    /// A stable identity (receivers use it to drop duplicates).
    pub event_id: String,
    /// A short name for the delivery record, such as `CAPTURED`.
    pub name: String,
    /// The JSON body.
    pub payload: Bytes,
}

/// What a command did.
pub(crate) struct Effect {
    /// The new document (`None`: unchanged).
    pub put: Option<Put>,
    /// Events to deliver.
    pub events: Vec<OutboxEvent>,
    /// The answer (stored with the idempotency key when below 500).
    pub answer: StoredResponse,
}

/// A pure change of one aggregate.
pub(crate) trait Command: Send + Sync + 'static {
    /// The aggregate it changes.
    fn key(&self) -> &AggregateKey;
    /// How to decode the stored document.
    fn decoder(&self) -> Decoder;
    /// Computes the change from the current document (`None`: it does not exist).
    fn apply(&self, current: Option<&Decoded>, ctx: &Ctx<'_>) -> Effect;
    /// The state label of a document of its kind (`None`: not one), so a write can tell which state it left.
    fn state_of(&self, _doc: &Decoded) -> Option<&'static str> {
        None
    }
    /// Whether another product follows this document (see [`Aggregate::followed`]).
    fn followed(&self, _doc: &Decoded) -> bool {
        true
    }
}

impl fmt::Debug for dyn Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command").field("key", self.key()).finish()
    }
}

/// A product's typed document.
pub(crate) trait Aggregate: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The kind under which it is stored.
    const KIND: &'static str;
    /// Its state label.
    fn state_label(&self) -> &'static str;
    /// When it changes by itself next, if ever.
    fn due_ms(&self) -> Option<i64>;
    /// The aggregate it belongs to, if any (an id of the same tenant), so that a product lists an aggregate's
    /// children with one indexed query instead of keeping an index document that every create must rewrite.
    /// Fixed at creation.
    fn parent(&self) -> Option<&str> {
        None
    }
    /// Whether the products that follow this kind (`Product::follows`) want to hear when time changes this one:
    /// a kind another product builds on marks the documents that product made, so the sweeper does not tell
    /// it about every other one (each notice costs the follower a read). Default: always.
    fn followed(&self) -> bool {
        true
    }
}

/// Decodes stored bytes as `A`.
pub(crate) fn decode<A: Aggregate>(bytes: &[u8]) -> Result<Decoded, String> {
    serde_json::from_slice::<A>(bytes)
        .map(|a| Arc::new(a) as Decoded)
        .map_err(|e| format!("stored {} is unreadable: {e}", A::KIND))
}

/// The typed view of a decoded document.
pub(crate) fn downcast<A: Aggregate>(d: &Decoded) -> Option<&A> {
    d.downcast_ref::<A>()
}

/// The typed result of a change.
pub(crate) struct Outcome<A> {
    /// The document to save (`None`: unchanged).
    pub save: Option<A>,
    /// Insert only (a create).
    pub create: bool,
    /// Events to deliver.
    pub events: Vec<OutboxEvent>,
    /// The answer.
    pub answer: StoredResponse,
}

impl<A> Outcome<A> {
    /// Nothing saved, only an answer.
    pub(crate) fn answer(answer: StoredResponse) -> Self {
        Outcome {
            save: None,
            create: false,
            events: Vec::new(),
            answer,
        }
    }
}

struct Change<A, F> {
    key: AggregateKey,
    f: F,
    _a: PhantomData<fn() -> A>,
}

impl<A, F> Command for Change<A, F>
where
    A: Aggregate,
    F: Fn(Option<&A>, &Ctx<'_>) -> Outcome<A> + Send + Sync + 'static,
{
    fn key(&self) -> &AggregateKey {
        &self.key
    }

    fn decoder(&self) -> Decoder {
        decode::<A>
    }

    fn apply(&self, current: Option<&Decoded>, ctx: &Ctx<'_>) -> Effect {
        let out = (self.f)(current.and_then(downcast::<A>), ctx);
        let put = out.save.map(|a| {
            let data = serde_json::to_vec(&a).unwrap_or_default();
            Put {
                state: a.state_label(),
                due_ms: a.due_ms(),
                parent: a.parent().map(str::to_owned),
                data,
                value: Arc::new(a),
                create: out.create,
            }
        });
        Effect {
            put,
            events: out.events,
            answer: out.answer,
        }
    }

    fn state_of(&self, doc: &Decoded) -> Option<&'static str> {
        downcast::<A>(doc).map(Aggregate::state_label)
    }

    fn followed(&self, doc: &Decoded) -> bool {
        downcast::<A>(doc).is_none_or(Aggregate::followed)
    }
}

/// A command from a typed function of the current document.
pub(crate) fn change<A, F>(key: AggregateKey, f: F) -> Box<dyn Command>
where
    A: Aggregate,
    F: Fn(Option<&A>, &Ctx<'_>) -> Outcome<A> + Send + Sync + 'static,
{
    debug_assert_eq!(key.kind, A::KIND);
    Box::new(Change {
        key,
        f,
        _a: PhantomData,
    })
}
