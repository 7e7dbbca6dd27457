//! The machine-readable event stream: every saved change of an aggregate (its kind, id, tenant and the state it
//! left) and every recorded webhook delivery attempt, numbered in the order they were published. The JSON
//! controls `GET /_emulator/events` (server-sent events) and `GET /_emulator/wait` read it, so that tests wait
//! for a state instead of polling.
//!
//! A change is published after its write committed and before its request is answered, so a client that waits
//! for one answer before sending the next request sees their events in that order. Events are kept in memory
//! only (a bounded broadcast): a subscriber that falls behind is told how many it missed, and an instance sees
//! the changes it made itself (`wait` also reads the store, so it works across instances on a shared store).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast;

use super::aggregate::{AggregateKey, Command, Ctx, Decoded, Decoder, Effect};
use super::store::{Op, StoreError, WriteRequest, WriteResult};
use super::{Platform, Shared};

/// How many events a subscriber may fall behind before it misses some.
const CAPACITY: usize = 4096;

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EventType {
    /// An aggregate was saved (created or changed).
    State,
    /// A webhook delivery attempt was recorded.
    Delivery,
}

impl EventType {
    /// The SSE event name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventType::State => "state",
            EventType::Delivery => "delivery",
        }
    }
}

/// One published event.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PlatformEvent {
    /// Its number in this instance's stream (1, 2, ...).
    pub seq: u64,
    /// What it is about.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The aggregate kind (`epayment.payment`), or `webhook.delivery`.
    pub kind: String,
    /// The aggregate id (a payment reference), or the delivery id.
    pub id: String,
    /// The tenant (MSN).
    pub msn: String,
    /// The aggregate's id for a state event; the subject (the aggregate the event reports) for a delivery.
    pub reference: String,
    /// The state the change left, or the attempt's outcome (`delivered`, `retry`, `given_up`, `dropped`).
    pub state: String,
    /// The state before the change (absent for a create).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_state: Option<String>,
    /// Emulator time of publication (RFC 3339).
    pub time: String,
    /// For a delivery: the attempt as `/_emulator/deliveries` lists it (without its request headers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<serde_json::Value>,
}

/// The publisher every subscriber listens to.
#[derive(Debug)]
pub(crate) struct Events {
    tx: broadcast::Sender<Arc<PlatformEvent>>,
    seq: AtomicU64,
    /// Serializes numbering and sending, so that numbers are in sending order.
    order: Mutex<()>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::Sender::new(CAPACITY),
            seq: AtomicU64::new(0),
            order: Mutex::new(()),
        }
    }
}

impl Events {
    /// A new subscription: events published from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<PlatformEvent>> {
        self.tx.subscribe()
    }

    /// Whether anybody listens: every write and delivery attempt asks first, so that without a subscriber the
    /// hot paths build no event at all.
    fn listened(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Numbers and sends an event (dropped when nobody listens).
    fn publish(&self, mut ev: PlatformEvent) {
        let _ordered = self.order.lock();
        ev.seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let _ = self.tx.send(Arc::new(ev));
    }
}

/// What an observed command saved.
#[derive(Debug, Clone)]
struct Saved {
    state: &'static str,
    previous: Option<&'static str>,
}

/// What the last application of an observed command noted.
#[derive(Debug, Default)]
struct Noted {
    /// What it saved, if it saved anything.
    saved: Option<Saved>,
    /// Whether the document (as saved, or as it stays) is one other products follow.
    followed: bool,
}

/// A command that remembers the state its last application saved (the store may apply a command more than once
/// when a create races; the last application is the one that committed).
struct Observed {
    inner: Box<dyn Command>,
    noted: Arc<Mutex<Noted>>,
}

impl Command for Observed {
    fn key(&self) -> &AggregateKey {
        self.inner.key()
    }

    fn decoder(&self) -> Decoder {
        self.inner.decoder()
    }

    fn apply(&self, current: Option<&Decoded>, ctx: &Ctx<'_>) -> Effect {
        let effect = self.inner.apply(current, ctx);
        // A change that saves nothing (a due callback attempt) still concerns the followers of its document.
        let followed = match (&effect.put, current) {
            (Some(p), _) => self.inner.followed(&p.value),
            (None, Some(c)) => self.inner.followed(c),
            (None, None) => false,
        };
        *self.noted.lock() = Noted {
            saved: effect.put.as_ref().map(|p| Saved {
                state: p.state,
                previous: current.and_then(|c| self.inner.state_of(c)),
            }),
            followed,
        };
        effect
    }

    fn state_of(&self, doc: &Decoded) -> Option<&'static str> {
        self.inner.state_of(doc)
    }

    fn followed(&self, doc: &Decoded) -> bool {
        self.inner.followed(doc)
    }
}

impl Platform {
    /// Runs a write on the store and publishes the aggregate change it made, if any, to the event stream and the
    /// metrics' state gauges (once committed: a backend may run a command again after a conflict, and an
    /// uncommitted run reports nothing). Every product command goes through here (requests and the sweeper), so
    /// both see every state change this instance makes.
    pub(crate) async fn write(&self, req: WriteRequest) -> Result<WriteResult, StoreError> {
        self.write_noting(req).await.0
    }

    /// [`Platform::write`], also answering whether it saved a document other products follow
    /// ([`super::aggregate::Aggregate::followed`]).
    pub(crate) async fn write_noting(
        &self,
        mut req: WriteRequest,
    ) -> (Result<WriteResult, StoreError>, bool) {
        let mut followed = false;
        let observed = match req.op {
            Op::Execute(cmd) => {
                let key = cmd.key().clone();
                let noted = Arc::new(Mutex::new(Noted::default()));
                req.op = Op::Execute(Box::new(Observed {
                    inner: cmd,
                    noted: noted.clone(),
                }));
                Some((key, noted))
            }
            other => {
                req.op = other;
                None
            }
        };
        let result = self.store.write(req).await;
        if let (Ok(WriteResult::Fresh(_)), Some((key, noted))) = (&result, observed) {
            let noted = std::mem::take(&mut *noted.lock());
            followed = noted.followed;
            if let Some(saved) = noted.saved {
                if let Some(m) = self.metrics.as_ref() {
                    m.moved(key.kind, saved.previous, saved.state);
                }
                // Kinds no product lists are not news to anyone.
                let listed = || {
                    self.products
                        .owner(key.kind)
                        .is_some_and(|p| p.decoder(key.kind).is_some())
                };
                if self.events.listened() && listed() {
                    self.events.publish(PlatformEvent {
                        seq: 0,
                        event_type: EventType::State,
                        kind: key.kind.to_owned(),
                        reference: key.id.clone(),
                        id: key.id,
                        msn: key.tenant,
                        state: saved.state.to_owned(),
                        previous_state: saved.previous.map(str::to_owned),
                        time: super::clock::rfc3339(self.clock.now()),
                        attempt: None,
                    });
                }
            }
        }
        (result, followed)
    }

    /// Publishes a recorded delivery attempt (`record` as `/_emulator/deliveries` lists it).
    pub(crate) fn delivery_event(&self, record: &serde_json::Value) {
        if !self.events.listened() {
            return;
        }
        let text = |k: &str| record[k].as_str().unwrap_or_default().to_owned();
        let mut attempt = record.clone();
        if let Some(o) = attempt.as_object_mut() {
            // The signature headers are in the delivery record for whoever asks for it; the stream stays small.
            o.remove("request_headers");
        }
        self.events.publish(PlatformEvent {
            seq: 0,
            event_type: EventType::Delivery,
            kind: "webhook.delivery".into(),
            id: record["delivery_id"].to_string(),
            msn: text("msn"),
            reference: text("reference"),
            state: text("outcome"),
            previous_state: None,
            time: super::clock::rfc3339(self.clock.now()),
            attempt: Some(attempt),
        });
    }
}

/// Which events a subscriber wants.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventFilter {
    /// Only this tenant (MSN).
    pub msn: Option<String>,
    /// Only events about this aggregate id (a payment reference), state changes and deliveries alike.
    pub reference: Option<String>,
    /// Only this kind (`epayment.payment`, `webhook.delivery`).
    pub kind: Option<String>,
    /// Only `state` or `delivery` events.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
}

impl EventFilter {
    /// Whether the event passes.
    pub(crate) fn matches(&self, ev: &PlatformEvent) -> bool {
        self.msn.as_ref().is_none_or(|m| *m == ev.msn)
            && self.reference.as_ref().is_none_or(|r| *r == ev.reference)
            && self.kind.as_ref().is_none_or(|k| *k == ev.kind)
            && self
                .event_type
                .as_ref()
                .is_none_or(|t| t == ev.event_type.as_str())
    }
}

/// Reads the current state of the aggregate with this id (of any listed kind, or `kind`; of any tenant, or
/// `msn`) from the store.
pub(crate) async fn current_state(
    s: &Shared,
    reference: &str,
    msn: Option<&str>,
    kind: Option<&str>,
) -> Result<Option<(String, String, String)>, StoreError> {
    let kinds: Vec<&'static str> = s
        .products
        .listed_kinds()
        .map(|(k, _)| k)
        .filter(|k| kind.is_none_or(|want| want == *k))
        .collect();
    for k in kinds {
        let q = super::store::AggregateQuery {
            kind: k.to_owned(),
            tenant: msn.map(str::to_owned),
            id_prefix: Some(reference.to_owned()),
            limit: 50,
            ..Default::default()
        };
        let rows = s.store.list_aggregates(&q).await?;
        if let Some(r) = rows.into_iter().find(|r| r.id == reference) {
            return Ok(Some((k.to_owned(), r.tenant, r.state)));
        }
    }
    Ok(None)
}
