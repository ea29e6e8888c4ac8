//! Micro-benchmarks of the hot pure paths: building the filtered envelope, both signature schemes, verifying.
//! `cargo bench --bench micro`.

use std::hint::black_box;

use courier_core::signature::{sign_header, sign_standard, verify_header};
use courier_core::{
    DeliveryId, Envelope, Event, EventData, EventId, EventType, PayloadFilter, TenantId, WebhookSecret,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn event() -> Event {
    let transcript: Vec<serde_json::Value> = (0..30)
        .map(|i| serde_json::json!({"role": if i % 2 == 0 { "assistant" } else { "user" }, "content": "A sentence of a call, about this long.", "agent": "greeter"}))
        .collect();
    Event {
        id: EventId::generate(),
        event_type: EventType::CallCompleted,
        created: 1_705_680_000,
        tenant_id: TenantId::generate(),
        livemode: true,
        data: EventData::parse(serde_json::json!({
            "call_id": "550e8400-e29b-41d4-a716-446655440000", "room_name": "room-abc", "workflow_slug": "onboarding",
            "user_id": "user-123", "status": "completed", "duration_seconds": 180, "agent_history": ["greeter", "support"],
            "transcript": transcript, "metrics": {"duration_seconds": 180, "agent_count": 2, "message_count": 15},
            "metadata": {"source": "kafka"}
        }))
        .expect("valid"),
    }
}

fn envelope(c: &mut Criterion) {
    let event = event();
    let delivery = DeliveryId::generate();
    let mut group = c.benchmark_group("envelope");
    for (name, filter) in [
        ("everything", PayloadFilter { include_transcript: true, include_metrics: true }),
        ("filtered", PayloadFilter::default()),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(
                    Envelope { event: &event, filter, delivery_id: &delivery, attempt: 1, max_attempts: 5 }.to_bytes(),
                )
            })
        });
    }
    group.finish();
}

fn signatures(c: &mut Criterion) {
    let event = event();
    let delivery = DeliveryId::generate();
    let body = Envelope {
        event: &event,
        filter: PayloadFilter { include_transcript: true, include_metrics: true },
        delivery_id: &delivery,
        attempt: 1,
        max_attempts: 5,
    }
    .to_bytes();
    let secret = WebhookSecret::generate();
    let header = sign_header(&[&secret], 1_705_680_000, &body);
    let mut group = c.benchmark_group("signature");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group
        .bench_function("x_webhook_signature", |b| b.iter(|| black_box(sign_header(&[&secret], 1_705_680_000, &body))));
    group.bench_function("standard_webhooks", |b| {
        b.iter(|| black_box(sign_standard(&[&secret], event.id.as_str(), 1_705_680_000, &body)))
    });
    group
        .bench_function("verify", |b| b.iter(|| black_box(verify_header(&secret, &header, &body, 1_705_680_000, 300))));
    group.finish();
}

criterion_group!(benches, envelope, signatures);
criterion_main!(benches);
